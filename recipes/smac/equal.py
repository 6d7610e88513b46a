# SMAC ablation, paper Table 4, code allocation "splitting equally": scale s uses only its own quarter of each codebook
# (official wo_motion_cdbk_share / wo_app_cdbk_share = True).
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='equal')),
        appearance=dict(allocation=dict(type='equal'))))

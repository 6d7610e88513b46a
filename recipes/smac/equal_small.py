# SMAC ablation, paper Table 4 "splitting the codes equally", CPU-sized: smac/small with the same change as smac/equal
# makes to smac/vox256.
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='equal')),
        appearance=dict(allocation=dict(type='equal'))))

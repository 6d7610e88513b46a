# SMAC ablation, paper Table 4 "sharing all codes", CPU-sized: smac/small with the same change as smac/shared makes
# to smac/vox256.
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='shared')),
        appearance=dict(allocation=dict(type='shared'))))

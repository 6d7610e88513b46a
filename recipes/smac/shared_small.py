# SMAC Table 4 "sharing all codes", CPU-sized twin of smac/shared (on smac/small).
# It makes the same change to smac/small that smac/shared makes to smac/vox256 (tests/test_smac_recipes.py).
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='shared')),
        appearance=dict(allocation=dict(type='shared'))))

# SMAC Table 4 "progressive", CPU-sized twin of smac/progressive (on smac/small).
# It makes the same change to smac/small that smac/progressive makes to smac/vox256 (tests/test_smac_recipes.py).
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='progressive')),
        appearance=dict(allocation=dict(type='progressive'))))

# SMAC Table 4 "splitting equally", CPU-sized twin of smac/equal (on smac/small).
# It makes the same change to smac/small that smac/equal makes to smac/vox256 (tests/test_smac_recipes.py).
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='equal')),
        appearance=dict(allocation=dict(type='equal'))))

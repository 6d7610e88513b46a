# SMAC Table 2 "+SMC", CPU-sized twin of smac/smc (on smac/small).
# It makes the same change to smac/small that smac/smc makes to smac/vox256 (tests/test_smac_recipes.py).
_base_ = ['./small.py']

model = dict(compensator=dict(motion_scales=(0, ), appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

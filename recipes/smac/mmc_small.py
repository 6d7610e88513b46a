# SMAC Table 2 "+MMC", CPU-sized twin of smac/mmc (on smac/small).
# It makes the same change to smac/small that smac/mmc makes to smac/vox256 (tests/test_smac_recipes.py).
_base_ = ['./small.py']

model = dict(compensator=dict(appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

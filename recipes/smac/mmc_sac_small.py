# SMAC Table 2 "+MMC+SAC", CPU-sized twin of smac/mmc_sac (on smac/small).
# It makes the same change to smac/small that smac/mmc_sac makes to smac/vox256 (tests/test_smac_recipes.py).
_base_ = ['./small.py']

model = dict(compensator=dict(appearance_scales=(0, )))

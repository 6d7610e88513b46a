# SMAC Table 2 "+MMC+SAC" at paper scale: + one appearance codebook at the coarsest scale (twin: mmc_sac_small).
# Paper Table 2 row 4 "+MMC+SAC" (§4.3: the multi-scale motion codebook plus an appearance codebook
# at a single scale, compensating only that scale's warped feature), at paper scale: ACC at the coarsest scale (the
# 32x32 latent; the paper does not name the scale) with the whole appearance codebook.  CPU twin: smac/mmc_sac_small.
_base_ = ['./vox256.py']

model = dict(compensator=dict(appearance_scales=(0, )))

test_size = 128  # tests/test_recipes_build.py runs it at 128 px (the parts follow the size); smac/vox256 runs at 256

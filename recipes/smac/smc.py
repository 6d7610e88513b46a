# SMAC Table 2 "+SMC" at paper scale: the motion codebook at the coarsest scale only (CPU twin: smac/smc_small).
# Paper Table 2 row 2 "+SMC" (§4.3: one motion codebook at a single scale compensates the initial
# flow at the first, coarsest scale only; that flow then warps the features of every scale), at paper scale: MCC at
# the 32x32 latent only, finer scales warped with its refined flow and occlusion; no appearance codebook.  Served by
# one scale, the progressive allocation gives it the whole motion codebook.  CPU-sized twin: smac/smc_small.
_base_ = ['./vox256.py']

model = dict(compensator=dict(motion_scales=(0, ), appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

test_size = 128  # tests/test_recipes_build.py runs it at 128 px (the parts follow the size); smac/vox256 runs at 256

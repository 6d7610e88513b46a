# SMAC Table 2 "+MMC" at paper scale: motion codebooks at all scales, no appearance codebook (twin: mmc_small).
# Paper Table 2 row 3 "+MMC" (§4.3: the multi-scale motion codebook compensates the flows across all
# scales), at paper scale: MCC at all 4 scales, no appearance codebook.  CPU-sized twin: smac/mmc_small.
_base_ = ['./vox256.py']

model = dict(compensator=dict(appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

test_size = 128  # tests/test_recipes_build.py runs it at 128 px (the parts follow the size); smac/vox256 runs at 256

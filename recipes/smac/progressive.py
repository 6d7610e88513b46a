# SMAC Table 4 "progressive" at paper scale: the official allocation, explicit (CPU twin: progressive_small).
# Paper Table 4 row 3, code allocation "progressive" (ours in the paper, the official default; the same
# model as smac/full and smac/vox256), at paper scale: scale s, coarse to fine, uses the first s + 1 quarters of each
# codebook (256/512/768/1024 codes).  CPU-sized twin: smac/progressive_small.
_base_ = ['./vox256.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='progressive')),
        appearance=dict(allocation=dict(type='progressive'))))

test_size = 128  # tests/test_recipes_build.py runs it at 128 px (the parts follow the size); smac/vox256 runs at 256

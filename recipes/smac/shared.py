# SMAC Table 4 "sharing all codes" at paper scale: every scale uses all codes (CPU twin: smac/shared_small).
# Paper Table 4 row 1, code allocation "sharing all codes at every scale", at paper scale: every scale
# retrieves from and quantises to all 1024 codes of each codebook (official motion_codebook_split /
# app_codebook_split = False).  CPU-sized twin: smac/shared_small.
_base_ = ['./vox256.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='shared')),
        appearance=dict(allocation=dict(type='shared'))))

test_size = 128  # tests/test_recipes_build.py runs it at 128 px (the parts follow the size); smac/vox256 runs at 256

# SMAC Table 4 "splitting equally" at paper scale: each scale uses its own quarter (CPU twin: smac/equal_small).
# Paper Table 4 row 2, code allocation "splitting the codes equally", at paper scale: scale s uses only
# its own quarter (256 codes) of each codebook (official wo_motion_cdbk_share / wo_app_cdbk_share = True).
# CPU-sized twin: smac/equal_small.
_base_ = ['./vox256.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='equal')),
        appearance=dict(allocation=dict(type='equal'))))

test_size = 128  # tests/test_recipes_build.py runs it at 128 px (the parts follow the size); smac/vox256 runs at 256

# FOMM with the widths of the official parity fixture (shared/fixtures/official/fomm/tiny.pt): 64 px,
# num_kp 10, widths 8..32, and align_corners=False, which is what the official code does on today's torch
# (it calls grid_sample / interpolate with the defaults).  A real recipe: it builds and runs at 64 px.
_base_ = ['./vox256.py']

image_size = 64
align_corners = False

model = dict(
    keypoint_detector=dict(block_expansion=8, max_features=32, num_blocks=4),
    motion=dict(block_expansion=8, max_features=32, num_blocks=4, align_corners=align_corners),
    encoder=dict(block_expansion=8, max_features=32),
    warper=dict(align_corners=align_corners),
    decoder=dict(block_expansion=8, max_features=32),
)

discriminator = dict(block_expansion=4, max_features=32)

# training at 64 px: the equivariance warp follows the model's convention, and the perceptual pyramid stops at
# 0.25 (VGG-19 up to relu5_1 needs 16 x 16 pixels)
losses = dict(equivariance=dict(align_corners=align_corners), perceptual=dict(scales=[1, 0.5, 0.25]))

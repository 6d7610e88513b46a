# FOMM at reduced widths for CPU training and tests: 128 px, 4-level hourglasses (32x32 motion resolution).
_base_ = ['./vox256.py']

image_size = 128

model = dict(
    keypoint_detector=dict(block_expansion=16, max_features=256, num_blocks=4),
    motion=dict(block_expansion=16, max_features=256, num_blocks=4),
    encoder=dict(block_expansion=16, max_features=128),
    decoder=dict(block_expansion=16, max_features=128, num_bottleneck_blocks=4),
)

discriminator = dict(block_expansion=16, max_features=128)

# DaGAN with the widths of the official parity fixture (shared/fixtures/official/dagan/tiny.pt): 64 px, 15
# keypoints, widths 8..32, the depth ResNet-18 with the fixture's patched stage widths 4/8/16/32 and decoder widths
# 2..32.  A real recipe: it builds and runs at 64 px.
_base_ = ['./vox256.py']

image_size = 64

model = dict(
    keypoint_detector=dict(
        block_expansion=8, max_features=32, num_blocks=4,
        depth=dict(stage_widths=(4, 8, 16, 32), decoder_channels=(2, 4, 8, 16, 32))),
    motion=dict(block_expansion=8, max_features=32, num_blocks=4),
    encoder=dict(block_expansion=8, max_features=32),
    compensator=dict(channels=32, block_expansion=8, max_features=32),
    decoder=dict(block_expansion=8, max_features=32),
)

discriminator = dict(block_expansion=4, max_features=16)

losses = dict(perceptual=dict(scales=[1, 0.5, 0.25]))

# MCNet with the widths of the official parity fixture (shared/fixtures/official/mcnet/tiny.pt): 256 px (the official
# code runs at no other size), 15 keypoints (hard-coded officially), keypoint detector and dense motion 4..16 wide,
# U-Net 4..32 (compensated widths 32/16/8: the fixture patch MB_FEATURE_CHANNELS), memory 16 x 32 x 32.  A real
# recipe: it builds and runs.
_base_ = ['./vox256.py']

block_expansion = 4
max_features = 32

model = dict(
    keypoint_detector=dict(block_expansion=4, max_features=16, num_blocks=5),
    motion=dict(block_expansion=4, max_features=16, num_blocks=5),
    encoder=dict(block_expansion=block_expansion, max_features=max_features),
    compensator=dict(in_channels=(32, 16, 8), mb_channel=16),
    decoder=dict(block_expansion=block_expansion, max_features=max_features),
)

discriminator = dict(block_expansion=4, max_features=16)

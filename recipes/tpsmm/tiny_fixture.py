# The tiny TPSMM of the official parity fixture (shared/fixtures/official/tpsmm/tiny.pt, 64x64 images):
# the vox-256 recipe with the fixture's small widths (meta.fixture_patches: ResNet-18 stage widths
# [4, 8, 16, 32], background stem 4, AVD hidden widths 16/32/64) and 4 hourglass blocks.  Tests only.
_base_ = ['./vox256.py']

image_size = 64
resnet_widths = (4, 8, 16, 32)

model = dict(
    keypoint_detector=dict(stage_widths=resnet_widths),
    motion=dict(block_expansion=4, max_features=32, num_blocks=4,
                background_predictor=dict(stage_widths=resnet_widths)),
    encoder=dict(block_expansion=4, max_features=32),
    decoder=dict(block_expansion=4, max_features=32),
)
avd_network = dict(id_bottle_size=16, pose_bottle_size=16, hidden_widths=(16, 32, 64))

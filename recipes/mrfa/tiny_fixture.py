# MRFA with the widths of the official parity fixture (shared/fixtures/official/mrfa/tiny.pt): 64 px, num_kp 10,
# TokenPose dim 32 x 2 layers x 4 heads on an HRNet of stem 16 and branches 8/16/32, dense motion 8..32 (4 blocks),
# generator 4..16, structure encoders 4..16 (4 blocks), correlation dim 16 and the flow updater's literal widths
# divided by 8 (the fixture's MRFA_WIDTH_DIVISOR).  A real recipe: it builds and runs at 64 px.
_base_ = ['./vox256.py']

image_size = 64

model = dict(
    keypoint_detector=dict(
        dim=32, depth=2, heads=4, mlp_ratio=3, stem_width=16,
        stage2=dict(num_modules=1, block='BASIC', num_blocks=[1, 1], num_channels=[8, 16]),
        stage3=dict(num_modules=2, block='BASIC', num_blocks=[1, 1, 1], num_channels=[8, 16, 32])),
    motion=dict(block_expansion=8, max_features=32, num_blocks=4),
    encoder=dict(block_expansion=4, max_features=16),
    compensator=dict(
        channels=[16, 16, 16, 16, 8, 4],
        structure=dict(dim=16, driving_encoder=dict(block_expansion=4, max_features=16, num_blocks=4),
                       source_encoder=dict(block_expansion=4, max_features=16, num_blocks=4)),
        updater=dict(motion_width=16, feature_dims=(16, 12), flow_dims=(16, 8), context_dim=24, refine_width=16)),
    decoder=dict(block_expansion=4, max_features=16),
)

losses = dict(perceptual=dict(scales=[1, 0.5, 0.25]))

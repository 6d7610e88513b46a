# MRFA at reduced widths for CPU training and tests: 128 px, TokenPose dim 64 x 4 layers on a narrow HRNet, dense
# motion and structure encoders of 4 blocks (32 x 32 prior flow and correlation grid), generator 16..128, flow updater
# widths / 4.  Trainable with no download: `thkit train mrfa/small` uses thkit's synthetic talking heads with MRFA's
# losses (random VGG-19 without $THKIT_VGG19_WEIGHTS, as fomm/small) plus a pixel L1 term.
_base_ = ['./vox256.py', '../_base_/datasets/synthetic.py']

image_size = 128

model = dict(
    keypoint_detector=dict(
        dim=64, depth=4, heads=4, mlp_ratio=2, stem_width=16,
        stage2=dict(num_modules=1, block='BASIC', num_blocks=[1, 1], num_channels=[16, 32]),
        stage3=dict(num_modules=1, block='BASIC', num_blocks=[1, 1, 1], num_channels=[16, 32, 64])),
    motion=dict(block_expansion=16, max_features=256, num_blocks=4),
    encoder=dict(block_expansion=16, max_features=128),
    compensator=dict(
        channels=[128, 128, 128, 64, 32, 16],
        structure=dict(dim=64, driving_encoder=dict(block_expansion=16, max_features=128, num_blocks=4),
                       source_encoder=dict(block_expansion=16, max_features=128, num_blocks=4)),
        updater=dict(motion_width=32, feature_dims=(32, 24), flow_dims=(32, 16), context_dim=48, refine_width=32)),
    decoder=dict(block_expansion=16, max_features=128),
)

# ---- training on the synthetic data (CPU-sized, as fomm/small) ------------------------------------------------------
losses = dict(
    pixel=dict(type='L1Loss', weight=100.0),
    perceptual=dict(allow_random=True, layer_weights=[10.0]),
)
optim_wrapper = dict(generator=dict(optimizer=dict(lr=5e-4)))
train_dataloader = dict(_delete_=True, **_base_.synthetic_train_dataloader)
val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
train_cfg = dict(max_iters=20_000, val_interval=1000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[12_000, 18_000], gamma=0.1)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1000))

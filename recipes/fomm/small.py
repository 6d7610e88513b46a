# FOMM at reduced widths for CPU training and tests: 128 px, 4-level hourglasses (32x32 motion resolution).
# Trainable with no download: `thkit train fomm/small` trains on thkit's synthetic talking heads (written to
# data/synth on first use) with FOMM's losses plus the vox-adv LSGAN, at CPU-sized batches and schedule.  Without
# $THKIT_VGG19_WEIGHTS the perceptual loss runs on a fixed random VGG-19 (allow_random): a multi-scale feature loss
# that still trains, but not FOMM's ImageNet-feature loss.
_base_ = ['./vox256.py', '../_base_/datasets/synthetic.py']

image_size = 128

model = dict(
    keypoint_detector=dict(block_expansion=16, max_features=256, num_blocks=4),
    motion=dict(block_expansion=16, max_features=256, num_blocks=4),
    encoder=dict(block_expansion=16, max_features=128),
    decoder=dict(block_expansion=16, max_features=128, num_bottleneck_blocks=4),
)

discriminator = dict(block_expansion=16, max_features=128)

# ---- training on the synthetic data --------------------------------------------------------------------------
losses = dict(
    perceptual=dict(allow_random=True),
    adversarial=dict(weight=1.0, discriminator_weight=1.0, feature_matching=[10.0] * 4),
)
train_dataloader = dict(_delete_=True, **_base_.synthetic_train_dataloader)
val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
train_cfg = dict(max_iters=20_000, val_interval=1000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[12_000, 18_000], gamma=0.1)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1000))

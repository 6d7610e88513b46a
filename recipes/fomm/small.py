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
# CPU-sized losses (measured with benchmarks/learns.py, whose table is in benchmarks/README.md): FOMM's perceptual
# pyramid stops at relu1_1 (the VGG is random without $THKIT_VGG19_WEIGHTS, and relu2..5 are over 99% of its cost),
# plus a pixel L1 term; no GAN (as fomm/vox256; fomm/vox256_adv has it); generator lr 5e-4.  With real VGG weights
# and time, restore FOMM's: --cfg-options "losses.perceptual.layer_weights=[10,10,10,10,10]".  benchmarks/learns.py
# (6 CPU minutes at 64 px, this schedule's 60 % / 90 % decays as fractions of the budget): held-out L1 0.0403, 0.0405,
# 0.0406 in three runs, copy-the-source 0.0462 (at a constant learning rate: 0.0435-0.0486).
losses = dict(
    pixel=dict(type='L1Loss', weight=100.0),
    perceptual=dict(allow_random=True, layer_weights=[10.0]),
    adversarial=None,
)
optim_wrapper = dict(generator=dict(optimizer=dict(lr=5e-4)))
train_dataloader = dict(_delete_=True, **_base_.synthetic_train_dataloader)
val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
train_cfg = dict(max_iters=20_000, val_interval=1000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[12_000, 18_000], gamma=0.1)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1000))

# OSTNet at fomm/small's widths for CPU training and tests (64-128 px), trainable with no download on thkit's
# synthetic talking heads: `thkit train ostnet/small`.  Same structure as ostnet/vox256.py (scale transformation in
# front of FOMM's dense motion, scale code in every decoder layer, scale augmentation of the driving frame); the
# losses are fomm/small's CPU-sized ones, reading the unzoomed driving frame as their target.
_base_ = ['./vox256.py', '../_base_/datasets/synthetic.py']

image_size = 128
code_dim = 32

model = dict(
    keypoint_detector=dict(block_expansion=16, max_features=256, num_blocks=4),
    motion=dict(rectifier=dict(code_dim=code_dim, hidden=128),
                motion=dict(block_expansion=16, max_features=256, num_blocks=4)),
    encoder=dict(block_expansion=16, max_features=128),
    decoder=dict(block_expansion=16, max_features=128, num_bottleneck_blocks=4,
                 conditioning=dict(dim=code_dim)),
)

discriminator = dict(block_expansion=16, max_features=128)

# fomm/small's CPU-sized losses (benchmarks/learns.py), targets = the unzoomed driving frame
losses = dict(
    pixel=dict(type='L1Loss', weight=100.0, inputs=dict(target='driving_target')),
    perceptual=dict(allow_random=True, layer_weights=[10.0]),
    adversarial=None,
    rectification=dict(weight=100.0),  # as the pixel term
)
optim_wrapper = dict(generator=dict(optimizer=dict(lr=5e-4)))
_synthetic_train = _base_.synthetic_train_dataloader
train_dataloader = dict(_delete_=True, **_synthetic_train)
train_dataloader['dataset']['augmentation'] = dict(
    type='AugmentationSequence',
    steps=[_synthetic_train['dataset']['augmentation'],
           dict(type='ScaleAugmentation', factor_range=_base_.scale_factor_range, p=1.0)])
val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
train_cfg = dict(max_iters=20_000, val_interval=1000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[12_000, 18_000], gamma=0.1)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1000))

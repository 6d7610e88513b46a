# MRFA with the TPS prior (recipes/mrfa/vox256_tps_prior.py) at reduced widths for CPU training and tests: 128 px,
# TPSMM's ResNet-18 at widths 8..64, TPS dense motion 16..256 (4 blocks, BatchNorm, one occlusion), structure encoders
# 16..128 (4 blocks), generator 16..128, flow updater widths / 4 (as recipes/mrfa/small.py).  Trains with no download
# on thkit's synthetic talking heads (`thkit train mrfa/small_tps_prior`), with MRFA's losses (random VGG-19 without
# $THKIT_VGG19_WEIGHTS) plus a pixel L1 term, and the TPS dropout schedule compressed to this run's length.
_base_ = ['./vox256_tps_prior.py', '../_base_/datasets/synthetic.py']

image_size = 128

model = dict(
    keypoint_detector=dict(stage_widths=(8, 16, 32, 64)),
    motion=dict(block_expansion=16, max_features=256, num_blocks=4),
    encoder=dict(block_expansion=16, max_features=128),
    compensator=dict(
        channels=[128, 128, 128, 64, 32, 16],
        structure=dict(dim=64, driving_encoder=dict(block_expansion=16, max_features=128, num_blocks=4),
                       source_encoder=dict(block_expansion=16, max_features=128, num_blocks=4)),
        updater=dict(motion_width=32, feature_dims=(32, 24), flow_dims=(32, 16), context_dim=48, refine_width=32)),
    decoder=dict(block_expansion=16, max_features=128),
)

# ---- training on the synthetic data (CPU-sized, as mrfa/small) ------------------------------------------------------
losses = dict(
    pixel=dict(type='L1Loss', weight=100.0),
    perceptual=dict(allow_random=True, layer_weights=[10.0]),
)
optim_wrapper = dict(generator=dict(optimizer=dict(lr=5e-4)))
train_dataloader = dict(_delete_=True, **_base_.synthetic_train_dataloader)
val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
train_cfg = dict(max_iters=20_000, val_interval=1000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[14_000, 18_000], gamma=0.1)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1000))
# the official TPS dropout over "epochs" of 200 iterations (100 epochs = max_iters)
small_epoch = 200
custom_hooks = [
    dict(type='ProgressBarHook'),
    dict(type='SampleGridHook', interval=1000, num_samples=4),
    dict(type='TrainRecordsHook'),
    dict(type='ExportWeightsHook'),
    dict(type='PartAttributeScheduleHook', part='motion', attribute='dropout_p',
         milestones=[(it * small_epoch // _base_.iters_per_epoch, p) for it, p in _base_.tps_dropout_schedule]),
]
test_size = 64  # tests/test_recipes_build.py runs it at 64 px (the smallest its 4-block hourglasses take)

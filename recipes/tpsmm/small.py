# TPSMM at reduced widths for CPU training and tests: 128 px (runs at 64 px too: `--size 64`), ResNet-18 stage
# widths 16..128, 4-level hourglass (motion at a quarter of the image size), encoder/decoder 16..128 channels.
# Trainable with no download: `thkit train tpsmm/small` trains on thkit's synthetic talking heads (written to
# data/synth on first use) with TPSMM's losses (perceptual pyramid, equivariance, warp, background) plus a pixel
# L1 term, its optimiser (Adam with weight decay, inf-norm clipping per network) and its TPS-dropout and
# background schedules compressed to a CPU-sized run (an "epoch" of 100 iterations).  Without
# $THKIT_VGG19_WEIGHTS the perceptual loss runs on a fixed random VGG-19 (allow_random).
_base_ = ['./vox256.py', '../_base_/datasets/synthetic.py']

image_size = 128
resnet_widths = (16, 32, 64, 128)

model = dict(
    keypoint_detector=dict(stage_widths=resnet_widths),
    motion=dict(block_expansion=16, max_features=256, num_blocks=4,
                background_predictor=dict(stage_widths=resnet_widths)),
    encoder=dict(block_expansion=16, max_features=128),
    decoder=dict(block_expansion=16, max_features=128),
)
avd_network = dict(id_bottle_size=32, pose_bottle_size=32, hidden_widths=(64, 128, 256))

# ---- training on the synthetic data ----------------------------------------------------------------------------
# CPU-sized losses as fomm/small (benchmarks/learns.py): the perceptual pyramid stops at relu1_1 (random VGG without
# $THKIT_VGG19_WEIGHTS; relu2..5 are over 99% of its cost) plus a pixel L1 term; TPSMM's other terms at their
# official weights.  With real VGG weights and time: --cfg-options "losses.perceptual.layer_weights=[10,10,10,10,10]".
losses = dict(
    pixel=dict(type='L1Loss', weight=100.0),
    perceptual=dict(allow_random=True, layer_weights=[10.0]),
)
optim_wrapper = dict(generator=dict(optimizer=dict(lr=5e-4)))
train_dataloader = dict(_delete_=True, **_base_.synthetic_train_dataloader)
val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
iters_per_epoch = 100
train_cfg = dict(max_iters=20_000, val_interval=1000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[12_000, 18_000], gamma=0.1)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1000))


def _tps_dropout(epoch):  # the official per-epoch schedule (recipes/tpsmm/vox256.py), on 100-iteration epochs
    return 0.0 if epoch >= 35 else min(epoch / 10 * 0.3 + 0.1, 0.3)


tps_dropout_schedule = [(e * iters_per_epoch, _tps_dropout(e)) for e in range(36)
                        if e == 0 or _tps_dropout(e) != _tps_dropout(e - 1)]
background_schedule = [(0, False), (10 * iters_per_epoch, True)]
custom_hooks = [
    dict(type='ProgressBarHook'),
    dict(type='SampleGridHook', interval=1000, num_samples=4),
    dict(type='TrainRecordsHook'),
    dict(type='ExportWeightsHook'),
    dict(type='PartAttributeScheduleHook', part='motion', attribute='dropout_p', milestones=tps_dropout_schedule),
    dict(type='PartAttributeScheduleHook', part='motion', attribute='use_background', milestones=background_schedule),
]

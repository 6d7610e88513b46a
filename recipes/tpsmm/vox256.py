# TPSMM (Zhao & Zhang, CVPR 2022), official config/vox-256.yaml (yoyo-nb/Thin-Plate-Spline-Motion-Model @ c616878).
# K = 10 thin-plate splines of 5 points, background affine predictor, multi-resolution occlusion,
# InstanceNorm everywhere except the two ResNet-18s; TPSMM passes align_corners=True to every
# grid_sample and bilinear resize.  Parameters: keypoint detector 11,227,812; dense motion 37,941,397
# (+ background predictor 11,188,998); inpainting encoder + decoder 24,737,283; AVD network 2,583,652.
# Training (`thkit train tpsmm/vox256`): the official losses, optimiser and schedule below; the AVD network's
# separate stage is recipes/tpsmm/vox256_avd.py.  Official checkpoints convert with `thkit convert --from tpsmm`.
_base_ = ['../_base_/runtime.py', '../_base_/datasets/voxceleb.py']

image_size = 256
input_range = (0, 1)  # RGB in [0, 1], no ImageNet normalisation

num_tps = 10
resnet_widths = (64, 128, 256, 512)

model = dict(
    type='TalkingHeadModel',
    keypoint_detector=dict(type='TPSKeypointDetector', num_tps=num_tps, num_channels=3,
                           stage_widths=resnet_widths),
    motion=dict(
        type='ThinPlateSplineMotion',
        num_tps=num_tps,
        num_channels=3,
        block_expansion=64,
        max_features=1024,
        num_blocks=5,
        scale_factor=0.25,
        kp_variance=0.01,
        multi_mask=True,
        tps_regularisation=0.01,
        align_corners=True,
        # official bg: True.  Used when a driving image is given (training from epoch 10, reconstruction);
        # the official demo passes no background motion (TalkingHeadModel.animate without `driving`).
        background_predictor=dict(stage_widths=resnet_widths),
        use_background=True,
        dropout_p=0.0,  # TPS dropout in training: set per epoch by the schedule below (custom_hooks)
    ),
    encoder=dict(type='TPSMMEncoder', in_channels=3, block_expansion=64, max_features=512, num_down_blocks=3),
    warper=dict(type='GridSampleWarper', align_corners=True),
    compensator=None,
    decoder=dict(type='TPSMMDecoder', out_channels=3, block_expansion=64, max_features=512, num_down_blocks=3),
    input_range=input_range,
)

# "Animation via disentanglement" (demo mode 'avd'): keypoints -> keypoints, trained separately.
avd_network = dict(type='AVDNetwork', num_tps=num_tps, id_bottle_size=128, pose_bottle_size=128,
                   hidden_widths=(256, 512, 1024))

# demo.py mode 'relative' (thkit.transfer.transfer_motion): relative_kp always adapts the movement scale
# (officially from batch element 0 only) and has no Jacobians.
motion_transfer = dict(relative=True, relative_jacobian=False, adapt_movement_scale=True)

# "Animation via disentanglement" as an animation mode: `thkit animate --mode avd` replaces relative motion
# transfer by the network the recipe defines under that name (its weights come with the checkpoint).
animation_modes = dict(avd=dict(keypoint_transfer='avd_network'))

# ---- training (config/vox-256.yaml train_params; train.py, modules/model.py GeneratorFullModel) -----------------
# perceptual: VGG-19 relu1_1..relu5_1, [10] * 5, on the pyramid [1, 0.5, 0.25, 0.125] (TPSMM's anti-aliased
# pyramid resizes with F.interpolate, nearest: pyramid_mode='nearest').  VGG-19 weights: $THKIT_VGG19_WEIGHTS or
# vgg_weights=... (torchvision's vgg19-dcbb9e9d.pth).  equivariance_value 10 (random TPS warp: sigma_affine 0.05,
# sigma_tps 0.005, 5x5 control points, TPSMM's radial basis; keypoint values only: no Jacobians).  warp_loss 10:
# the driving frame's occluded encoder features vs the warped source features, 4 levels.  bg 10: the background
# affines' cycle |I - A(s,d) A(d,s)|, once the background predictor runs (epoch 10).  No GAN.
losses = dict(
    perceptual=dict(type='PerceptualPyramidLoss', weight=1.0, layer_weights=[10.0] * 5, scales=[1, 0.5, 0.25, 0.125],
                    pyramid_mode='nearest', input_range=input_range, vgg_weights=None),
    equivariance=dict(type='EquivarianceLoss', value_weight=10.0, jacobian_weight=0.0, sigma_affine=0.05,
                      sigma_tps=0.005, points_tps=5, tps_kernel='tpsmm', align_corners=True),
    warp=dict(type='WarpLoss', weight=10.0),
    background=dict(type='BackgroundCycleLoss', weight=10.0),
)

# Epochs as official: num_repeats 75 x (VoxCeleb1 training identities, id_sampling) items in batches of 28.
train_identities = 424
num_repeats = 75
tpsmm_batch_size = 28
iters_per_epoch = train_identities * num_repeats // tpsmm_batch_size
num_epochs = 100

train_dataloader = dict(batch_size=tpsmm_batch_size, num_workers=12)
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=num_epochs * iters_per_epoch,
                 val_interval=5 * iters_per_epoch)
val_cfg = dict(type='ValLoop')

# One Adam (lr 2e-4, betas (0.5, 0.999), weight decay 1e-4) over the keypoint detector, the dense motion network
# (with its background predictor) and the inpainting encoder/decoder.  The official code has a second Adam with the
# same settings for the background predictor, stepped from epoch 10; Adam works per parameter and a parameter
# without a gradient is not touched, so one optimiser is the same.  Gradients are clipped per network to an
# inf-norm of 10 (clip_grad_norm_ on the keypoint detector, the dense motion network and the background
# predictor, not on the inpainting network).
optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    generator=dict(type='PartClipOptimWrapper',
                   optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-4),
                   clip_parts=dict(parts=['keypoint_detector', 'motion', 'motion.bg_predictor'], max_norm=10,
                                   norm_type='inf')),
)
# MultiStepLR gamma 0.1 at epochs 70 and 90 (epoch_milestones)
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[70 * iters_per_epoch, 90 * iters_per_epoch], gamma=0.1),
]


def _tps_dropout(epoch):
    # modules/model.py: p = min(epoch / dropout_inc_epoch * dropout_maxp + dropout_startp, dropout_maxp) before
    # dropout_epoch (35), then off; dropout_startp 0.1, dropout_maxp 0.3, dropout_inc_epoch 10
    return 0.0 if epoch >= 35 else min(epoch / 10 * 0.3 + 0.1, 0.3)


# per-epoch switches of the official GeneratorFullModel, as attribute schedules of the motion part (iterations)
tps_dropout_schedule = [(e * iters_per_epoch, _tps_dropout(e)) for e in range(36)
                        if e == 0 or _tps_dropout(e) != _tps_dropout(e - 1)]
background_schedule = [(0, False), (10 * iters_per_epoch, True)]  # bg_start 10
custom_hooks = [
    dict(type='ProgressBarHook'),
    dict(type='SampleGridHook', interval=1000, num_samples=4),
    dict(type='TrainRecordsHook'),
    dict(type='ExportWeightsHook'),
    dict(type='PartAttributeScheduleHook', part='motion', attribute='dropout_p', milestones=tps_dropout_schedule),
    dict(type='PartAttributeScheduleHook', part='motion', attribute='use_background', milestones=background_schedule),
]
# checkpoint_freq 50 epochs
default_hooks = dict(checkpoint=dict(interval=50 * iters_per_epoch))

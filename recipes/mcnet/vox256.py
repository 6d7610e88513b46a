# MCNet, "Implicit Identity Representation Conditioned Memory Compensation Network for Talking Head Video Generation"
# (Hong & Xu, ICCV 2023): the official config/vox-256.yaml with the README's command-line overrides, as actually run
# (harlanhong/ICCV2023-MCNET @ 9a08e22): --kp_num 15, --mbunit ExpendMemoryUnit --mb_spatial 32 --mb_channel 512,
# --generator_gan 0, --kp_distance 10, --feat_consistent 10.  Parameter counts equal the official networks:
# generator 87,583,005 (dense motion 37,796,433 + encoder/decoder 24,737,283 + memory unit 25,049,289); keypoint
# detector 14,258,268; discriminator 2,774,209.  Official checkpoints convert with `thkit convert --from mcnet`.
#
# Data flow: FOMM keypoints (15, Jacobians) -> FOMM dense motion at 64 x 64 (one occlusion map) -> U-Net encoder of the
# source (64/128/256/512 ch at 256/128/64/32 px) -> every level warped and occluded -> the memory compensator on the
# 32, 64 and 128 px levels (odd channels; one meta-memory conditioned on the implicit identity code) -> U-Net decoder
# with the occlusion blend.  align_corners: True for the generator's warps and resizes, False (torch's default,
# which the official code leaves) for the dense motion's deformed sources.
_base_ = ['../_base_/runtime.py', '../_base_/datasets/voxceleb.py', '../_base_/schedules/fomm_vox.py']

image_size = 256
input_range = (0, 1)
num_kp = 15
block_expansion = 64
max_features = 512
mb_channel = 512
mb_spatial = 32

model = dict(
    type='TalkingHeadModel',
    keypoint_detector=dict(
        type='FOMMKeypointDetector', num_kp=num_kp, in_channels=3, block_expansion=32, max_features=1024,
        num_blocks=5, temperature=0.1, estimate_jacobian=True, scale_factor=0.25),
    motion=dict(
        type='FirstOrderMotion', num_kp=num_kp, in_channels=3, block_expansion=64, max_features=1024,
        num_blocks=5, scale_factor=0.25, kp_variance=0.01, estimate_occlusion_map=True, align_corners=False),
    encoder=dict(type='MCNetEncoder', in_channels=3, block_expansion=block_expansion, max_features=max_features,
                 num_down_blocks=3),
    warper=dict(type='GridSampleWarper', align_corners=True),
    # the warped 32, 64 and 128 px levels (the official hard-coded widths 512/256/128), coarsest first
    compensator=dict(
        type='MemoryCompensator', in_channels=(max_features, max_features // 2, max_features // 4),
        levels=(-1, -2, -3), num_kp=num_kp, mb_channel=mb_channel, mb_spatial=mb_spatial, style_dim=512,
        style_hidden=128, attention_scale=0.25, num_kernels=4, kernel_temperature=34.0, kernel_ratio=0.25,
        noise='auto'),  # official: fresh noise on every call; 'auto' = in training only (deterministic inference)
    decoder=dict(type='MCNetDecoder', out_channels=3, block_expansion=block_expansion, max_features=max_features,
                 num_down_blocks=3),
    input_range=input_range,
)

# keypoint-aware multi-scale discriminator (FOMM's, use_kp: image + 15 driving-keypoint heatmaps, no spectral norm).
# The released recipe never steps it (generator_gan 0); a recipe turns it on with losses.adversarial.weight > 0.
discriminator = dict(
    type='MultiScaleDiscriminator', scales=[1], in_channels=3, block_expansion=32, max_features=512,
    num_blocks=4, sn=False, use_kp=True, num_kp=num_kp, kp_variance=0.01)

# demo.py make_animation(relative=True, adapt_movement_scale=True): relative Jacobians, batch-0 hull scale
motion_transfer = dict(relative=True, relative_jacobian=True, adapt_movement_scale=True)

# ---- training (config/vox-256.yaml train_params + the README command line; `thkit train mcnet/vox256`) --------------
losses = dict(
    perceptual=dict(type='PerceptualPyramidLoss', weight=1.0, layer_weights=[10.0] * 5, scales=[1, 0.5, 0.25, 0.125],
                    pyramid_mode='slice', input_range=input_range, vgg_weights=None),
    equivariance=dict(type='EquivarianceLoss', value_weight=10.0, jacobian_weight=10.0, sigma_affine=0.05,
                      sigma_tps=0.005, points_tps=5, tps_kernel='fomm', align_corners=False),
    # --kp_distance 10: the official sign() penalty, zero gradient (opt-in fix: mode='hinge', which trains)
    keypoint_distance=dict(type='KeypointDistanceLoss', weight=10.0, margin=0.2, mode='official'),
    memory_consistency=dict(type='MemoryConsistencyLoss', weight=10.0),
    # --generator_gan 0: no adversarial loss, no feature matching, the discriminator is never stepped
    adversarial=dict(type='LSGANLoss', weight=0, discriminator_weight=1.0, feature_matching=[10.0] * 4),
)

# 100 epochs x num_repeats 75, lr x0.1 at epoch 80; Adam 2e-4, betas (0.5, 0.999) (G + KP one Adam, D another);
# gradient-norm clipping 10 on the generator side; batches whose loss is NaN are skipped.  README: batch 8 per GPU.
_ipe = _base_.iters_per_epoch
train_cfg = dict(max_iters=100 * _ipe, val_interval=5 * _ipe)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[80 * _ipe], gamma=0.1)]
train_dataloader = dict(batch_size=8)
trainer = dict(nonfinite='skip')  # as officially: a NaN batch is dropped (logged as skipped_nonfinite)
# official: clip_grad_norm_(10) on the generator (thkit's motion, encoder, compensator and decoder: one group, one norm)
# and on the keypoint detector, each as a whole (opt-in: list the generator's parts one by one to clip each separately)
optim_wrapper = dict(
    generator=dict(_delete_=True, type='PartClipOptimWrapper', optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999)),
                   clip_parts=dict(parts=['keypoint_detector', ['motion', 'encoder', 'compensator', 'decoder']],
                                   max_norm=10, norm_type=2)))

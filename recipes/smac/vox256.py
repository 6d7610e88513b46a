# SMAC, "Synergizing Motion and Appearance: Multi-Scale Compensatory Codebooks for Talking Head Video Generation"
# (Zhao, Hong, Huang, Xu; CVPR 2025): the official options/train.yml + test.yml (ShaelynZ/synergize-motion-appearance
# @ 6b50135) as a thkit recipe.  Parameter counts equal the official networks: net_g (encoder + compensator +
# decoder) 30,118,854; motion estimator 52,054,701 (keypoint detector 14,258,268 + dense motion 37,796,433);
# discriminator 6,960,961.  Official checkpoints convert with `thkit convert --from smac` (net_g_*.pth, EMA weights by
# default, + net_motion_estimator_*.pth [+ net_d_*.pth]).
#
# Data flow: FOMM keypoints (15, Jacobians) -> FOMM dense motion at 64x64 (+ driving keypoint heatmaps) -> VQGAN
# encoder of the source (taps at 256/128/64 px and the 32x32 latent) -> multi-scale codebook compensation
# (MCC refines flow + occlusion, the feature is warped, ACC compensates it; scales 32, 64, 128, 256) -> VQGAN decoder
# fusing the compensated features with SFT + addition.  Images in [-1, 1]; the output has no activation.
_base_ = ['../_base_/runtime.py', '../_base_/datasets/voxceleb.py', '../_base_/schedules/smac_vox.py']

image_size = 256
input_range = (-1, 1)
num_kp = 15

# autoencoder widths: level l (stride 2**l) has nf * ch_mult[l] channels; the latent is nf * ch_mult[-1]
nf = 64
ch_mult = (1, 2, 2, 4)
norm_groups = 32
channels = [nf * m for m in ch_mult[::-1]]  # per compensated scale, coarse to fine: 256, 128, 128, 64
# both retrieval transformers get image_size from the builder: their token grid is the latent (stride 8) = the flow
# (image / 4) after one halving, 32 x 32 = 1024 learned position embeddings at 256 px (token_stride=8, the default)
motion_dim = 32
appearance_dim = 256

model = dict(
    type='TalkingHeadModel',
    keypoint_detector=dict(
        type='FOMMKeypointDetector', num_kp=num_kp, in_channels=3, block_expansion=32, max_features=1024,
        num_blocks=5, temperature=0.1, estimate_jacobian=True, scale_factor=0.25),
    # SMAC's released weights were trained on torch 1.12: the deformed-source grid_sample uses the default
    # align_corners=False (fixture quirk 5), while net_g's warps and resizes use True (the warper below)
    motion=dict(
        type='FirstOrderMotion', num_kp=num_kp, in_channels=3, block_expansion=64, max_features=1024,
        num_blocks=5, scale_factor=0.25, kp_variance=0.01, estimate_occlusion_map=True, align_corners=False,
        return_driving_heatmap=True),
    # taps: end of levels 0-2 (256/128/64 px), after the first residual unit of level 3 (32 px, the appearance
    # codebook target of the driving frame) and the latent (the source's 32 px feature)
    encoder=dict(
        type='VQGANEncoder', in_channels=3, nf=nf, ch_mult=ch_mult, num_res_blocks=2, attn_levels=(3, ),
        norm_groups=norm_groups, out_indices=('L0', 'L1', 'L2', 'L3.1', 'latent')),
    warp_levels=(0, 1, 2, 4),  # the source features of the 4 scales, fine to coarse
    warper=dict(type='GridSampleWarper', align_corners=True),
    compensator=dict(
        type='MultiScaleCodebookCompensator',
        channels=channels,
        patch_sizes=(1, 2, 4, 8),  # ACC windows at 32/64/128/256 px: 32 x 32 tokens at every scale
        motion=dict(
            type='MotionCodebookCompensation', num_kp=num_kp, dim=motion_dim, norm_groups=norm_groups,
            codebook=dict(type='VectorQuantizer', num_codes=1024, dim=motion_dim, beta=0.25),
            allocation=dict(type='progressive'),  # one group per scale: 256/512/768/1024 codes
            transformer=dict(num_layers=2, num_heads=8, ffn_dim=2 * motion_dim),
            motion_width=128, feature_dims=(128, 96), flow_dims=(128, 64), context_dim=192, refine_width=128),
        appearance=dict(
            type='AppearanceCodebookCompensation', dim=appearance_dim,
            codebook=dict(type='VectorQuantizer', num_codes=1024, dim=appearance_dim, beta=0.25),
            allocation=dict(type='progressive'),
            transformer=dict(num_layers=2, num_heads=8, ffn_dim=2 * appearance_dim, masked_layers=(0, ))),
        target_indices=(0, 1, 2, 3)),
    decoder=dict(
        type='VQGANDecoder', out_channels=3, nf=nf, ch_mult=ch_mult, num_res_blocks=2, attn_levels=(3, ),
        norm_groups=norm_groups, sft=True, add=True, fusion_weight=1.0, low_res_output='train'),
    input_range=input_range,
)

discriminator = dict(type='VQGANDiscriminator', in_channels=3, ndf=64, n_layers=4)

# demo.py: relative keypoints with relative Jacobians and the convex-hull movement scale
motion_transfer = dict(relative=True, relative_jacobian=True, adapt_movement_scale=True)

# options/train.yml (weights as the official code applies them; see shared/notes/anchors-seed-methods.md §1.5)
losses = dict(
    pixel=dict(type='L1Loss', weight=1.0),
    perceptual=dict(type='PerceptualPyramidLoss', weight=1.0, layer_weights=[1.0] * 5, scales=[1, 0.5, 0.25, 0.125],
                    pyramid_mode='slice', input_range=input_range,
                    # official: the VGG sees [-1, 1] images as if [0, 1] (opt-in fix: official_smac_range_quirk=False)
                    official_smac_range_quirk=True),
    low_res=dict(type='LowResolutionLoss', weight=0.5, pixel_weight=1.0, perceptual='@perceptual'),
    adversarial=dict(type='HingeGANLoss', weight=0.8, adaptive=True, max_adaptive_weight=1.0,
                     rec_terms=('pixel', 'perceptual'), disc_factor=1.0, start_iter=5001),
    codebook=dict(type='CodebookLoss', weight=1.0, motion_weight=1.0, appearance_weight=1.0),
    flow_reconstruction=dict(type='FlowReconstructionLoss', weight=32.0),
    # official Transform.transform_frame: grid_sample with torch 1.12's default align_corners=False (opt-in fix: True)
    equivariance=dict(type='EquivarianceLoss', value_weight=1.0, jacobian_weight=1.0, sigma_affine=0.05,
                      sigma_tps=0.005, points_tps=5, align_corners=False),
    # official KPDistanceLoss: a sign() penalty whose gradient is exactly zero (opt-in fix: mode='hinge', which trains)
    keypoint_distance=dict(type='KeypointDistanceLoss', weight=1.0, margin=0.2, mode='official'),
)

# training (for reference): Adam lr 8e-5, betas (0.9, 0.99), separate optimisers for generator, motion estimator and
# discriminator; 250k iterations, x0.5 at 200k and 225k; EMA 0.995 on net_g; batch 16 (4 GPUs x 4)
test_size = 256  # the full model's token grid is fixed by image_size

# ---- training data (the schedule and optimisers come from _base_/schedules/smac_vox.py) ----------------------
# official train.yml: batch 16 = 4 per GPU on 4 GPUs; no colour jitter.  The effective batch comes from the world size:
# `torchrun --nproc_per_node=4 -m thkit.cli train smac/vox256` (each process loads its own share of the data); on
# N GPUs set train_dataloader.batch_size=16 // N (gradient accumulation is not used: the schedule counts steps)
smac_batch_size = 16  # official total batch
smac_world_size = 4  # official GPUs (processes)
train_dataloader = dict(batch_size=smac_batch_size // smac_world_size, dataset=dict(augmentation=dict(jitter_p=0.0)))

# official: an EMA (decay 0.995) of net_g (our encoder, compensator and decoder; not the motion estimator), saved
# with the checkpoints and exported as the model weights (the demo loads params_ema)
custom_hooks = _base_.custom_hooks + [
    dict(type='GeneratorEMAHook', decay=0.995, parts=['encoder', 'compensator', 'decoder'])]

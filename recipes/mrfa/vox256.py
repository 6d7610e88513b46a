# MRFA (Tao et al., "Learning Motion Refinement for Unsupervised Face Animation", NeurIPS 2023), official
# config/vox1.yaml (JialeTao/MRFA @ 20f935f, prior_model mtia) as a thkit recipe.  Parameter counts equal the official
# networks: keypoint detector (MTIA / TokenPose-B) 12,283,462; dense motion (FOMM's) 37,730,268; RaftFlow 64,325,476 =
# encoder + decoder (the official generator, 43,844,739) + compensator (structure encoders, correlation, flow updater,
# 20,480,737).  The official checkpoint's VGG-19 (loss only) is not part of the model.
# Official checkpoints ({'model': DataParallel state_dict}) convert with `thkit convert --from mrfa`.
#
# The prior flow (FOMM dense motion at 64 x 64) is refined at 6 levels (8 .. 256 px) from a 4096 x 4096 structure
# correlation; the official code calls grid_sample with the torch default (align_corners=False) in the dense motion and
# the prior branch, and True (pixel coordinates) in the refinement, which is what this recipe does.
_base_ = ['../_base_/runtime.py', '../_base_/datasets/voxceleb.py', '../_base_/schedules/fomm_vox.py']

image_size = 256
input_range = (0, 1)
num_kp = 10

model = dict(
    type='TalkingHeadModel',
    keypoint_detector=dict(
        type='TokenPoseKeypointDetector', num_kp=num_kp, dim=192, depth=12, heads=8, mlp_ratio=3, patch_size=4,
        stem_width=64, estimate_jacobian=True,
        stage2=dict(num_modules=1, block='BASIC', num_blocks=[4, 4], num_channels=[32, 64]),
        stage3=dict(num_modules=4, block='BASIC', num_blocks=[4, 4, 4], num_channels=[32, 64, 128])),
    motion=dict(
        type='FirstOrderMotion', num_kp=num_kp, in_channels=3, block_expansion=64, max_features=1024, num_blocks=5,
        scale_factor=0.25, kp_variance=0.01, estimate_occlusion_map=True, align_corners=False),
    # the official generator's encoder: 7x7 block + 5 down blocks, all 6 levels are warped (256 .. 8 px)
    encoder=dict(type='FOMMEncoder', in_channels=3, block_expansion=64, max_features=512, num_down_blocks=5),
    compensator=dict(
        type='MotionRefinementCompensator',
        channels=[512, 512, 512, 256, 128, 64],
        prior_align_corners=False,
        prior_only=False,  # raft_flow.prior_only (recipes/mrfa/vox256_prior_only.py)
        structure=dict(type='StructureCorrelation', num_kp=num_kp, dim=256, scale=0.25, kp_variance=0.1,
                       driving_encoder=dict(block_expansion=32, max_features=512, num_blocks=5),
                       source_encoder=dict(block_expansion=32, max_features=512, num_blocks=5)),
        updater=dict(type='CorrelationFlowUpdater', radius=3, levels=2, motion_width=128, feature_dims=(128, 96),
                     flow_dims=(128, 64), context_dim=192, refine_width=128)),
    decoder=dict(type='MultiLevelFusionDecoder', out_channels=3, block_expansion=64, max_features=512,
                 num_up_blocks=5, fuse_prior=True),
    input_range=input_range,
)

# vox1.yaml animate_params (the README demo adds --adapt_scale)
motion_transfer = dict(relative=True, relative_jacobian=True, adapt_movement_scale=False)

# ---- training (vox1.yaml train_params) -----------------------------------------------------------------------------
# Perceptual VGG-19 pyramid [10] * 5 at [1, 0.5, 0.25, 0.125] (TPSMM/MRFA's nearest pyramid), equivariance 10 on
# values and Jacobians; no GAN, no loss on the prior flow.  Adam lr 2e-4, betas (0.5, 0.999), MultiStepLR at epochs
# 60 and 90 of 100 (the FOMM schedule's; MRFA's epochs are 150 repeats of VoxCeleb1 in batches of 80).
losses = dict(
    perceptual=dict(type='PerceptualPyramidLoss', weight=1.0, layer_weights=[10.0] * 5, scales=[1, 0.5, 0.25, 0.125],
                    pyramid_mode='nearest', input_range=input_range, vgg_weights=None),
    equivariance=dict(type='EquivarianceLoss', value_weight=10.0, jacobian_weight=10.0, sigma_affine=0.05,
                      sigma_tps=0.005, points_tps=5, tps_kernel='fomm', align_corners=False),
)

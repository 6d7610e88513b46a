# FOMM (Siarohin et al., NeurIPS 2019), official config/vox-256.yaml, as a thkit recipe.
# Parameter counts equal the official networks: keypoint detector 14,215,368; dense motion 37,730,268;
# encoder + decoder (the generator without its dense motion network) 7,845,123; discriminator 2,758,849.
# Official checkpoints (vox-cpk.pth.tar) convert with `thkit convert --from fomm`.
#
# align_corners=True for the motion network's and the warper's grid_sample calls: the released weights were
# trained on torch 1.0, whose grid_sample behaved as align_corners=True.  The official code run on today's torch
# uses False (recipes/fomm/tiny_fixture.py; tests/test_fomm.py checks it against the official outputs).
_base_ = ['../_base_/runtime.py', '../_base_/datasets/voxceleb.py', '../_base_/schedules/fomm_vox.py']

image_size = 256
input_range = (0, 1)
num_kp = 10
align_corners = True

model = dict(
    type='TalkingHeadModel',
    keypoint_detector=dict(
        type='FOMMKeypointDetector', num_kp=num_kp, in_channels=3, block_expansion=32, max_features=1024,
        num_blocks=5, temperature=0.1, estimate_jacobian=True, scale_factor=0.25),
    motion=dict(
        type='FirstOrderMotion', num_kp=num_kp, in_channels=3, block_expansion=64, max_features=1024,
        num_blocks=5, scale_factor=0.25, kp_variance=0.01, estimate_occlusion_map=True,
        align_corners=align_corners),
    # the generator warps only its coarsest feature (stride 4 = the dense-motion resolution at scale 0.25)
    encoder=dict(type='FOMMEncoder', in_channels=3, block_expansion=64, max_features=512, num_down_blocks=2,
                 out_indices=(-1, )),
    warper=dict(type='GridSampleWarper', align_corners=align_corners),
    compensator=None,
    decoder=dict(type='FOMMDecoder', out_channels=3, block_expansion=64, max_features=512, num_down_blocks=2,
                 num_bottleneck_blocks=6),
    input_range=input_range,
)

# vox-256: spectral norm, never trained (generator_gan = 0).  vox-adv-256: use_kp=True, sn=False.
discriminator = dict(
    type='MultiScaleDiscriminator', scales=[1], in_channels=3, block_expansion=32, max_features=512,
    num_blocks=4, sn=True, use_kp=False, num_kp=num_kp, kp_variance=0.01)

# animate_params of config/vox-256.yaml (run.py --mode animate); the README demo uses adapt_movement_scale=True
motion_transfer = dict(relative=True, relative_jacobian=True, adapt_movement_scale=False)

# ---- training (config/vox-256.yaml train_params.loss_weights; `thkit train fomm/vox256`) ----------------------
# perceptual: VGG-19 relu1_1..relu5_1 with weights [10] * 5 on a pyramid [1, 0.5, 0.25, 0.125].  The VGG-19 weights
# are torchvision's ImageNet file (vgg19-dcbb9e9d.pth), read from $THKIT_VGG19_WEIGHTS or vgg_weights=...; without
# it the loss warns loudly and uses a random VGG.  vox-256 trains no GAN (generator_gan 0): no discriminator step.
losses = dict(
    perceptual=dict(type='PerceptualPyramidLoss', weight=1.0, layer_weights=[10.0] * 5, scales=[1, 0.5, 0.25, 0.125],
                    pyramid_mode='slice', input_range=input_range, vgg_weights=None),
    equivariance=dict(type='EquivarianceLoss', value_weight=10.0, jacobian_weight=10.0, sigma_affine=0.05,
                      sigma_tps=0.005, points_tps=5, tps_kernel='fomm', align_corners=align_corners),
    adversarial=dict(type='LSGANLoss', weight=0, discriminator_weight=1.0, feature_matching=[0.0] * 4),
)

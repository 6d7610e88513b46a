# DaGAN (Hong et al., "Depth-Aware Generative Adversarial Network for Talking Head Video Generation", CVPR 2022),
# official config/vox-adv-256.yaml with the README's command line (--kp_num 15 --rgbd, DepthAwareGenerator), as a
# thkit recipe.  Parameter counts equal the official networks: keypoint detector (RGB-D) 14,262,519; generator
# 46,096,917 (dense motion 37,796,433 + encoder + depth encoder and depth-aware attention 455,361 + decoder);
# depth network ResNet-18 11,689,512 + decoder 3,152,724 (frozen); discriminator 2,774,209.
#
# The depth network's weights come from their own files: set model.keypoint_detector.depth.weights to the folder
# holding DaGAN's encoder.pth and depth.pth (on the command line: --cfg-options
# model.keypoint_detector.depth.weights=depth/models/weights_19).  num_layers=18 is demo.py's weights_19;
# DaGAN's training script uses the ResNet-50 depth_face_model_Voxceleb2_10w (depth_layers = 50).  Official
# checkpoints convert with `thkit convert --from dagan CKPT DEPTH/encoder.pth DEPTH/depth.pth`.
#
# align_corners=False: DaGAN was written for torch >= 1.3, whose grid_sample / interpolate default is False.
_base_ = ['../fomm/vox256_adv.py']

image_size = 256
input_range = (0, 1)
num_kp = 15
align_corners = False
depth_layers = 18

model = dict(
    type='TalkingHeadModel',
    keypoint_detector=dict(
        type='RGBDKeypointDetector', num_kp=num_kp, in_channels=4, block_expansion=32, max_features=1024,
        num_blocks=5, temperature=0.1, estimate_jacobian=True, scale_factor=0.25,
        depth=dict(type='MonodepthDepthNet', num_layers=depth_layers, weights=None, scales=(0, 1, 2, 3))),
    motion=dict(num_kp=num_kp, block_expansion=64, max_features=1024, num_blocks=5, align_corners=align_corners),
    encoder=dict(type='FOMMEncoder', in_channels=3, block_expansion=64, max_features=512, num_down_blocks=2,
                 out_indices=(-1, )),
    warper=dict(type='GridSampleWarper', align_corners=align_corners),
    # the depth-aware cross-modal attention on the warped stride-4 feature; queries from the source depth
    compensator=dict(_delete_=True, type='DepthAwareAttention', channels=256, block_expansion=64, max_features=512,
                     num_down_blocks=2),
    decoder=dict(type='FOMMDecoder', out_channels=3, block_expansion=64, max_features=512, num_down_blocks=2,
                 num_bottleneck_blocks=6),
    input_range=input_range,
)

discriminator = dict(num_kp=num_kp, sn=False, use_kp=True)

# demo.py: relative motion with adapt_movement_scale
motion_transfer = dict(relative=True, relative_jacobian=True, adapt_movement_scale=True)

# ---- training (vox-adv-256 loss weights: GAN 1, feature matching [10] * 4, perceptual [10] * 5, equivariance
# 10 / 10, kp_distance 10; depth_constraint 0 is left out) ---------------------------------------------------------
# kp_distance: the official sign() penalty, zero gradient (opt-in fix: mode='hinge', which trains)
losses = dict(equivariance=dict(align_corners=align_corners),
              keypoint_distance=dict(type='KeypointDistanceLoss', weight=10.0, margin=0.2, mode='official'))
# 150 epochs x 75 repeats of 424 identities in batches of 48 (4 GPUs), Adam 2e-4 (0.5, 0.999), no decay
dagan_batch_size = 48
adv_iters_per_epoch = 424 * 75 // dagan_batch_size
train_dataloader = dict(batch_size=dagan_batch_size)
train_cfg = dict(max_iters=150 * adv_iters_per_epoch, val_interval=5 * adv_iters_per_epoch)
param_scheduler = []

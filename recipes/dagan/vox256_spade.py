# DaGAN's SPADE variant (Hong et al., CVPR 2022; official SPADEDepthAwareGenerator, released as
# SPADE_DaGAN_vox_adv_256.pth.tar): config/vox-adv-256.yaml with --kp_num 15 --rgbd --generator
# SPADEDepthAwareGenerator.  dagan/vox256 with the FOMM decoder replaced by the SPADE decoder (SPADEGenerator: the
# attended warped feature compressed to 4 channels + the occluded deformed source as the label map, fc 256 -> 512,
# three SPADE ResBlocks at 512, two nearest-x2 SPADE ResBlocks 512 -> 256 -> 64, spectral norm, InstanceNorm).
# Generator parameters 67,545,305 as the official (dense motion 37,796,433 + encoder 379,392 + depth encoder and
# attention 455,361 + SPADE decoder 28,914,119).  Keypoint detector, depth network and discriminator as dagan/vox256.
#
# Official checkpoints convert with `thkit convert --from dagan SPADE_DaGAN_vox_adv_256.pth.tar DEPTH/encoder.pth
# DEPTH/depth.pth`; a plain DaGAN checkpoint given to this recipe (or a SPADE one to dagan/vox256) is reported in one
# line naming the recipe to use.  Which depth network the released SPADE checkpoint was trained with is not stated
# officially (demo.py hard-codes the ResNet-18 weights_19; training loads the ResNet-50): the depth files tell, and
# model.keypoint_detector.depth.num_layers=50 switches.  The official SPADE training command (README, commented
# out) runs batch 6 per process on 7 GPUs; the training settings here are dagan/vox256's.
_base_ = ['./vox256.py']

model = dict(
    decoder=dict(_delete_=True, type='SPADEDecoder', in_channels=256, label_channels=4, out_features=64,
                 hidden_channels=128, num_middle_blocks=3, out_channels=3, spectral_norm=True, norm='instance',
                 align_corners=_base_.align_corners),
)

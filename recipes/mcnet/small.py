# MCNet at reduced widths for CPU training and tests: 128 px, 10 keypoints, U-Net 16..128, memory 64 x 16 x 16
# (compensating the 16, 32 and 64 px levels).  Trainable with no download: `thkit train mcnet/small` trains on thkit's
# synthetic talking heads with MCNet's losses (perceptual pyramid, equivariance, keypoint distance, memory
# consistency) plus, as fomm/small, a pixel L1 term and a perceptual loss stopping at relu1_1 (CPU-sized; without
# $THKIT_VGG19_WEIGHTS the VGG is random).
_base_ = ['./vox256.py', '../_base_/datasets/synthetic.py']

image_size = 128
num_kp = 10

model = dict(
    keypoint_detector=dict(num_kp=num_kp, block_expansion=16, max_features=256, num_blocks=4),
    motion=dict(num_kp=num_kp, block_expansion=16, max_features=256, num_blocks=4),
    encoder=dict(block_expansion=16, max_features=128),
    compensator=dict(in_channels=(128, 64, 32), num_kp=num_kp, mb_channel=64, mb_spatial=16, style_dim=128,
                     style_hidden=64),
    decoder=dict(block_expansion=16, max_features=128),
)

discriminator = dict(block_expansion=16, max_features=128, num_kp=num_kp)

losses = dict(
    pixel=dict(type='L1Loss', weight=100.0),
    perceptual=dict(allow_random=True, layer_weights=[10.0]),
    adversarial=None,
    # thkit's corrected keypoint-distance loss (a real gradient); the paper recipe trains the official sign()
    # form, whose gradient is zero (docs/methods/smac.md, official-mode switches)
    keypoint_distance=dict(mode='hinge'),
)
optim_wrapper = dict(generator=dict(optimizer=dict(lr=5e-4)))
train_dataloader = dict(_delete_=True, **_base_.synthetic_train_dataloader)
val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
train_cfg = dict(max_iters=20_000, val_interval=1000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[12_000, 18_000], gamma=0.1)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1000))

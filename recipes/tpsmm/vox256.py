# TPSMM (Zhao & Zhang, CVPR 2022), official config/vox-256.yaml (yoyo-nb/Thin-Plate-Spline-Motion-Model @ c616878).
# K = 10 thin-plate splines of 5 points, background affine predictor, multi-resolution occlusion,
# InstanceNorm everywhere except the two ResNet-18s; TPSMM passes align_corners=True to every
# grid_sample and bilinear resize.  Parameters: keypoint detector 11,227,812; dense motion 37,941,397
# (+ background predictor 11,188,998); inpainting encoder + decoder 24,737,283; AVD network 2,583,652.
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
        dropout_p=0.0,  # TPS dropout in training: 0.1 -> 0.3 over 10 epochs, off from epoch 35
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

# OSTNet, "Learning Online Scale Transformation for Talking Head Video Generation" (Hong & Xu, arXiv 2407.09965):
# FOMM-sized, no official code (every choice not stated in the paper is listed in docs/methods/ostnet.md).
# FOMM's keypoint detector and dense motion (recipes/fomm/vox256.py) with the scale transformation in front of the
# dense motion: ScaleTransformation (source + driving keypoints and their spread -> scale code z -> 20 RARE fiducial
# points -> thin-plate spline) rectifies the driving keypoints (and the driving image) to the source's scale, then
# FirstOrderMotion runs on them (ScaleRectifiedMotion wraps it); z is added into every decoder layer after warping
# (FOMMDecoder's conditioning=ScaleCodeInjection).  Training zooms each driving frame by 0.7-1.4 around the face
# (ScaleAugmentation) and reconstructs the unzoomed frame (driving_target).  Animation uses absolute keypoints:
# no anchor frame, no relative motion.
_base_ = ['../fomm/vox256.py']

code_dim = 64
scale_factor_range = (0.7, 1.4)

model = dict(
    motion=dict(
        _delete_=True, type='ScaleRectifiedMotion', padding_mode='border',
        rectifier=dict(type='ScaleTransformation', num_kp=_base_.num_kp, code_dim=code_dim, hidden=256,
                       num_fiducials=20),
        motion=_base_.model.motion),
    decoder=dict(conditioning=dict(type='ScaleCodeInjection', dim=code_dim)),
)

# no anchor frame at inference: absolute driving keypoints (the rectifier brings them to the source's scale)
motion_transfer = dict(relative=False, relative_jacobian=False, adapt_movement_scale=False)

# reconstruction losses compare with the unzoomed driving frame (ScaleAugmentation keeps it as driving_target); the
# equivariance loss stays on the generator's (zoomed) driving input
# Our addition (the paper names only "L_rec" and a "multi-term loss"): an L1 between the rectified driving image and the
# unzoomed driving frame, a direct training signal for the scale transformation (its only other path is through the
# rectified keypoints and the dense motion).
losses = dict(
    perceptual=dict(inputs=dict(target='driving_target')),
    rectification=dict(type='L1Loss', weight=10.0, inputs=dict(pred='rectified_driving', target='driving_target')),
)

# expression-preserving scale augmentation after FOMM's pair augmentation
_pair_augmentation = _base_.train_dataloader.dataset.augmentation
train_dataloader = dict(dataset=dict(augmentation=dict(
    _delete_=True, type='AugmentationSequence',
    steps=[_pair_augmentation, dict(type='ScaleAugmentation', factor_range=scale_factor_range, p=1.0)])))

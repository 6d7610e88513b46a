# A mix no paper has: OSTNet's scale transformation (Hong & Xu, arXiv 2407.09965) in front of SMAC (Zhao et al.,
# CVPR 2025).  SMAC's FOMM dense motion (15 keypoints, driving heatmaps for the motion codebook) runs on driving
# keypoints rectified to the source's scale by ScaleTransformation's thin-plate spline (ScaleRectifiedMotion wraps
# it), and the scale code z is added into every layer of SMAC's VQGAN decoder (conditioning=ScaleCodeInjection).
# Training zooms the driving frame by 0.7-1.4 around the face (ScaleAugmentation) and the reconstruction losses read
# the unzoomed frame (driving_target).  Parts: recipes/smac/vox256.py, recipes/ostnet/vox256.py.
# Not adapted: SMAC's appearance-codebook target and the discriminator's real image are the generator's (zoomed)
# driving input, not driving_target (see docs/methods/ostnet.md).
_base_ = ['../smac/vox256.py']

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

# no anchor frame at inference: absolute driving keypoints
motion_transfer = dict(relative=False, relative_jacobian=False, adapt_movement_scale=False)

losses = dict(
    pixel=dict(inputs=dict(target='driving_target')),
    perceptual=dict(inputs=dict(target='driving_target')),
    low_res=dict(inputs=dict(target='driving_target')),
)

_pair_augmentation = _base_.train_dataloader.dataset.augmentation
train_dataloader = dict(dataset=dict(augmentation=dict(
    _delete_=True, type='AugmentationSequence',
    steps=[_pair_augmentation, dict(type='ScaleAugmentation', factor_range=scale_factor_range, p=1.0)])))

test_size = 128  # the recipe build test runs the mix at 128 px (the token grid follows image_size)

# Semantic-aware face prior (recipes/semantic_prior/vox256.py) at CPU size on thkit's synthetic heads: fomm/small's
# widths, losses and data at 64 px, with the face-geometry loss on the renderer's ground-truth landmarks
# (ground_truth.json, added to each batch by the dataset as landmarks_source / landmarks_driving; MediaPipe is the
# option for real data: losses.geometry.landmarks='mediapipe' with the mediapipe anchors), PoseAlignment and the
# FacePriorControl.  Assumptions as in vox256.py; here:
# * pose_range = the synthetic training data's: HeadMotion.sample draws yaw amplitudes up to 40, pitch 20, roll 15
#   degrees (thkit/datasets/synthetic.py), so a request beyond those is outside what the model saw;
# * control.pose_gain is left at 1 (uncalibrated: keypoints rotated by the request): a gain measured on some videos
#   did not transfer to others (0.23 vs 0.43 on one trained model, docs/methods/semantic_prior.md), so none is assumed;
# * the geometry loss weight 10 as vox256; the synthetic data root data/synth64;
# * control.realise='warp' (as vox256): a pose edit is a thin-plate-spline warp of the predicted motion pinned at the
#   keypoints, the head outline and the image border, because this 64-px FOMM's dense motion follows a keypoint
#   rotation out of the image plane by a fraction only (yaw +-10 -> +-2.4 degrees by MediaPipe; warp: -10.9 / +8.5;
#   docs/methods/semantic_prior.md "The edit as a warp").
_base_ = ['../fomm/small.py', '../_base_/face_priors/head10.py']

image_size = 64
synthetic_root = 'data/synth64'

losses = dict(
    geometry=dict(type='FaceGeometryLoss', weight=10.0, anchors=_base_.face_prior_anchors_synthetic,
                  landmarks='ground_truth'),
)
train_dataloader = dict(dataset=dict(root=synthetic_root))
val_dataloader = dict(dataset=dict(root=synthetic_root))

pose_alignment = dict(type='PoseAlignment', template=_base_.face_prior_template)
control = dict(type='FacePriorControl', template=_base_.face_prior_template,
               pose_range=dict(yaw=40.0, pitch=20.0, roll=15.0), expressions=_base_.face_prior_expressions,
               realise='warp', outline=_base_.face_prior_outline)

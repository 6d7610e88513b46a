# The semantic-aware face prior on SMAC at CPU size (recipes/semantic_prior/smac_vox256.py's parts on
# recipes/smac/small.py, which already has 10 keypoints), on thkit's synthetic heads: the face-geometry loss on the
# renderer's ground-truth landmarks, pose alignment and the control, as recipes/semantic_prior/small.py does for FOMM
# (the same assumptions, pose range and data root data/synth64).
_base_ = ['../smac/small.py', '../_base_/face_priors/head10.py']

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

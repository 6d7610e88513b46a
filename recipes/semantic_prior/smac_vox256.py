# The semantic-aware face prior (recipes/semantic_prior/vox256.py, on FOMM) on SMAC instead: SMAC's vox-256 model
# (recipes/smac/vox256.py) with 10 keypoints, one per face point of the 10-point prior (recipes/_base_/face_priors/
# head10.py), the face-geometry loss on MediaPipe landmarks, pose alignment and the pose / expression control.
# Assumptions as vox256.py (the prior, the loss and its weight 10, the control's ranges and its realisation as a warp
# of the predicted motion, which SMAC's motion-codebook compensation then refines like any other flow); here also:
# * num_kp 15 -> 10 (keypoint detector, dense motion and the motion codebook's keypoint input): SMAC's released
#   weights do not load into this recipe (they have 15 keypoints); it trains from scratch as vox256.py does.
_base_ = ['../smac/vox256.py', '../_base_/face_priors/head10.py']

num_kp = 10

model = dict(
    keypoint_detector=dict(num_kp=num_kp),
    motion=dict(num_kp=num_kp),
    compensator=dict(motion=dict(num_kp=num_kp)),
)

losses = dict(
    geometry=dict(type='FaceGeometryLoss', weight=10.0, anchors=_base_.face_prior_anchors_mediapipe,
                  landmarks='mediapipe', input_range=_base_.input_range),
)

pose_alignment = dict(type='PoseAlignment', template=_base_.face_prior_template)
control = dict(type='FacePriorControl', template=_base_.face_prior_template,
               pose_range=dict(yaw=30.0, pitch=20.0, roll=20.0), expressions=_base_.face_prior_expressions,
               realise='warp', outline=_base_.face_prior_outline)

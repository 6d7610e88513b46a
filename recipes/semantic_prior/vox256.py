# Semantic-aware face prior on FOMM (Liu et al., "Controllable One-Shot Face Video Synthesis With Semantic Aware
# Prior", arXiv 2304.14471; abstract only, no public code): FOMM's vox-256 model whose 10 keypoints are tied to face
# landmarks (geometry loss), pose alignment of the source to the first driving frame before relative motion, and a
# pose / expression control interface (`thkit animate --pose yaw=10 --expression mouth_open=0.5`).
#
# What is the paper's: the two problems (large poses / source-vs-first-frame misalignment; no semantic understanding
# or face-geometry regularisation), "rich face prior information", pose alignment, pose- and expression-control.
# What is OURS (assumptions; see docs/methods/semantic_prior.md):
# * the baseline is FOMM (vox-256 widths, losses, schedule) with num_kp=10, one keypoint per face point of the
#   10-point prior recipes/_base_/face_priors/head10.py (its template and anchors are stated there);
# * face-geometry regularisation = FaceGeometryLoss: L1 between each keypoint (source and driving) and the mean of its
#   anchor landmarks, weight 10 (the equivariance loss's weight); on real data (VoxCeleb) the landmarks are MediaPipe's
#   face mesh computed on the fly (offline, no gradient); on thkit's synthetic heads the renderer's ground truth
#   (recipes/semantic_prior/small.py);
# * pose alignment = PoseAlignment: template pose fits of the source and of the first driving frame, the source's
#   keypoints rotated (template-estimated depths), scaled and moved onto the first frame's pose;
# * control = FacePriorControl: yaw/pitch/roll added to the fitted Euler angles of each transferred frame, the
#   keypoints rotated about the head centre with template depths; expressions add template displacements;
#   realise='warp': the model animates the unedited keypoints and the edit is a thin-plate-spline warp of its motion
#   that carries each keypoint to its edited place, the head outline (head10.py) along with the rotation, and keeps
#   the image border still (thkit/warp/edit.py); control.realise=keypoints feeds the edited keypoints to the dense
#   motion network instead (what a model trained to follow keypoints out of the image plane would use);
# * pose_range (the requests accepted): +-30 yaw, +-20 pitch, +-20 roll degrees, an ASSUMED VoxCeleb spread (not
#   measured on the data); a request outside it is refused in one line.
_base_ = ['../fomm/vox256.py', '../_base_/face_priors/head10.py']

num_kp = 10

losses = dict(
    geometry=dict(type='FaceGeometryLoss', weight=10.0, anchors=_base_.face_prior_anchors_mediapipe,
                  landmarks='mediapipe', input_range=_base_.input_range),
)

pose_alignment = dict(type='PoseAlignment', template=_base_.face_prior_template)
control = dict(type='FacePriorControl', template=_base_.face_prior_template,
               pose_range=dict(yaw=30.0, pitch=20.0, roll=20.0), expressions=_base_.face_prior_expressions,
               realise='warp', outline=_base_.face_prior_outline)

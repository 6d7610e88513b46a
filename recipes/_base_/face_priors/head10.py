# A 10-point face prior for keypoint models with num_kp=10 (recipes/semantic_prior/*): keypoint k is tied to one
# semantic face point, whose 3-D template position (head units: x right, y down, z towards the camera, origin at the
# head's centre) drives pose fitting, pose alignment and pose / expression edits (thkit/transfer_control.py).
#
# ASSUMPTIONS (ours; Liu et al. 2023 publish no prior):
# * the template is the mean of thkit's synthetic head renderer over 500 identities (HeadIdentity.sample, seeds
#   [0, 2, i]), neutral expression (eyes open, mouth closed, brows at rest); it stands in for a generic face on real
#   data too (a fit of it is invariant to scale and position, not to face shape);
# * anchors: the landmarks each keypoint is tied to: the renderer's 22 ground-truth landmarks (synthetic data), or
#   MediaPipe face-mesh indices (real data: subject's right brow 70/63/105/66/107, left brow 300/293/334/296/336, upper
#   eyelids 159/386, nose tip 1, mouth corners 61/291, upper lip 0, lower lip 17, chin 152);
# * expression bases: displacements of the template points per unit, from the renderer's feature geometry
#   (mouth_open_max 0.150, eye_up 0.086, brow range ~0.035 head units);
# * the head outline that pins a pose edit realised as a warp (FacePriorControl realise='warp'): the silhouette of
#   the renderer's head ellipsoid facing the camera, radii (head_a, 1) = (0.75, 1.0) head units, 16 points; on real
#   faces it stands for a generic head (benchmarks/semantic_prior.py part w measures how its size moves the result).
face_prior_names = ['brow_r', 'brow_l', 'eye_r_top', 'eye_l_top', 'nose_tip', 'mouth_r', 'mouth_l', 'lip_top',
                    'lip_bottom', 'chin']
face_prior_anchors_synthetic = [[0, 1], [2, 3], [8], [10], [14], [15], [16], [17], [18], [21]]
face_prior_anchors_mediapipe = [[70, 63, 105, 66, 107], [300, 293, 334, 296, 336], [159], [386], [1], [61], [291],
                                [0], [17], [152]]
face_prior_template = [
    [-0.299, -0.228, 0.688], [0.299, -0.228, 0.688], [-0.299, -0.165, 0.719], [0.299, -0.165, 0.719],
    [0.0, 0.159, 0.862], [-0.239, 0.49, 0.647], [0.239, 0.49, 0.647], [0.0, 0.441, 0.718], [0.0, 0.54, 0.673],
    [0.0, 0.9, 0.349]]
face_prior_expressions = dict(
    # lower lip down by the mouth opening, corners by half of it
    mouth_open=dict(range=(-1.0, 1.0), basis=[[0, 0, 0]] * 5 + [[0, 0.075, 0], [0, 0.075, 0], [0, 0, 0],
                                                                 [0, 0.15, 0], [0, 0, 0]]),
    # upper eyelids down (1 = closed)
    eye_close=dict(range=(-0.5, 1.0), basis=[[0, 0, 0]] * 2 + [[0, 0.086, 0], [0, 0.086, 0]] + [[0, 0, 0]] * 6),
    # brows up
    brow_raise=dict(range=(-1.0, 1.0), basis=[[0, -0.035, 0], [0, -0.035, 0]] + [[0, 0, 0]] * 8),
)
face_prior_outline = dict(radii=(0.75, 1.0), points=16)

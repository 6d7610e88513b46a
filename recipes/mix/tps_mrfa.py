# A mix no paper has: MRFA's flow refinement after TPSMM's thin-plate-spline motion.  TPSMM's keypoint detector (10
# TPS of 5 points: 50 keypoints) and dense motion (at 64 x 64, multi-resolution occlusion, no background motion) give
# the prior flow; MRFA's structure correlation (over all 50 keypoints' Gaussians) and RAFT-style updater refine it at
# 6 levels, and MRFA's multi-level generator decodes.  The refinement starts from the TPS occlusion of the flow's size
# (as logits).  Parts: TPSKeypointDetector, ThinPlateSplineMotion (recipes/tpsmm/vox256.py); FOMMEncoder,
# MotionRefinementCompensator (StructureCorrelation, CorrelationFlowUpdater), MultiLevelFusionDecoder
# (recipes/mrfa/vox256.py).
_base_ = ['../mrfa/vox256.py']

num_tps = 10

model = dict(
    keypoint_detector=dict(_delete_=True, type='TPSKeypointDetector', num_tps=num_tps, num_channels=3),
    motion=dict(_delete_=True, type='ThinPlateSplineMotion', num_tps=num_tps, num_channels=3, block_expansion=64,
                max_features=1024, num_blocks=5, scale_factor=0.25, kp_variance=0.01, multi_mask=True,
                align_corners=True, background_predictor=None, use_background=False),
    compensator=dict(prior_align_corners=True, structure=dict(num_kp=5 * num_tps)),
)
# TPSMM has no Jacobians: the equivariance loss constrains the keypoint values only
losses = dict(equivariance=dict(jacobian_weight=0.0, align_corners=True))

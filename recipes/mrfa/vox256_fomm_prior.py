# MRFA with the official `train_params.prior_model: fomm` (config/vox1.yaml, JialeTao/MRFA @ 20f935f): the prior
# keypoints come from MRFA's copy of FOMM's KPDetector (modules/kp_detector.py, `fomm_kp_detector`: block_expansion 32,
# max_features 1024, 5 blocks, temperature 0.1, scale_factor 0.25, estimate_jacobian True, estimate_occlusion False).
# Facts read in the official code and relied on here:
# * that KPDetector always predicts ONE shared 4-channel Jacobian map (`num_jacobian_maps = 1`), weighted by each
#   keypoint's heatmap; its 7x7 `kp` / `jacobian` heads have padding 0 (the heatmap is cropped by 6 px), identity init;
# * its hourglass is MRFA's modules/util.py Hourglass: nn.BatchNorm2d blocks (as FOMM's SynchronizedBatchNorm2d in
#   eval); its AntiAliasInterpolation2d subsamples with F.interpolate (nearest), identical to FOMM's [::4] at 1/4;
# * the dense motion is the same DenseMotionNetwork(**dense_motion) as with the default prior (F.grid_sample with
#   torch's default align_corners=False; occlusion returned as logits, refined by RaftFlow);
# * RaftFlow receives kp_source['kp'] / kp_driving['kp'] (10 points) unchanged, so everything after the keypoint
#   detector is recipes/mrfa/vox256.py's.
# Official parameter counts (built from the official code, tests/data/mrfa_variants_keys.json): encoder 14,153,592,
# dense motion 37,730,268, RaftFlow 64,325,476.  Losses and schedule as vox1.yaml (equivariance_jacobian 10).
_base_ = ['./vox256.py']

num_kp = 10

model = dict(
    keypoint_detector=dict(
        _delete_=True, type='FOMMKeypointDetector', num_kp=num_kp, in_channels=3, block_expansion=32,
        max_features=1024, num_blocks=5, temperature=0.1, scale_factor=0.25, estimate_jacobian=True,
        single_jacobian_map=True, pad=0, norm='batch'),
)

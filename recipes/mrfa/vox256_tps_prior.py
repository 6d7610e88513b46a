# MRFA with the official `train_params.prior_model: tpsm` (config/vox1.yaml, JialeTao/MRFA @ 20f935f): TPSMM's keypoint
# detector and dense motion as the prior motion model (`tpsm_kp_detector`: num_tps 10; `tpsm_dense_motion`:
# block_expansion 64, max_features 1024, 5 blocks, scale_factor 0.25, num_tps 10).
# Facts read in the official code and relied on here:
# * TPSKPDetector (modules/kp_detector.py) is torchvision's ResNet-18 with fc -> num_tps * 5 * 2 and 2 sigmoid - 1:
#   50 points, no Jacobians (thkit's TPSKeypointDetector, `encoder.fg_encoder.*` -> `keypoint_detector.backbone.*`);
# * TPSDenseMotionNetwork (modules/dense_motion.py) is built with its default multi_mask=False: ONE occlusion conv
#   on the last hourglass output, returned as raw logits (no sigmoid) at the flow's 64 x 64, which RaftFlow refines
#   as it does FOMM's (thkit: `occlusion_logits` of ThinPlateSplineMotion(multi_mask=False));
# * its hourglass is MRFA's modules/util.py Hourglass with nn.BatchNorm2d (TPSMM's own uses InstanceNorm): norm='batch';
# * the source is warped by the K + 1 transforms with grid_sample(align_corners=True); TPS system (L + 0.01 I),
#   U = r^2 log(r^2 + 1e-9), driving points as control points; kp_variance 0.01; the anti-aliased source is
#   subsampled with F.interpolate (nearest);
# * no background motion on vox1 (bg_start 1000 >= num_epochs: no bg_predictor is built, bg_param None);
# * before RaftFlow the keypoints are averaged per 5-point group (`kp.view(B, -1, 5, 2).mean(2)`, modules/model.py and
#   demo.py), so the structure encoders see raft_flow.num_kp = 10 Gaussians: StructureCorrelation(kp_group_size=5);
# * RaftFlow itself does not change with the prior: the prior branch warps with F.grid_sample at torch's default
#   align_corners=False (prior_align_corners=False, unlike recipes/mix/tps_mrfa.py), the refinement starts from the
#   TPS flow and the TPS occlusion logits, and the decoder fuses the prior-warped features as with the default prior;
# * training with tpsm: the TPS dropout of the contribution maps (dropout_epoch 35, startp 0.1, maxp 0.3,
#   inc_epoch 10, as TPSMM's), equivariance_jacobian 0 and epoch_milestones [70, 90] (the yaml's "enable this for
#   tpsm" lines); the equivariance transform is still MRFA's FOMM-style Transform (tps_kernel 'fomm').
# Official parameter counts (tests/data/mrfa_variants_keys.json): encoder 11,227,812, dense motion 37,799,868,
# RaftFlow 64,325,476.  demo.py's normalize_kp with --relative would read a 'jacobian' the TPS keypoints do not have;
# thkit's relative transfer runs without Jacobians (relative_jacobian False).
_base_ = ['./vox256.py']

num_tps = 10

model = dict(
    keypoint_detector=dict(_delete_=True, type='TPSKeypointDetector', num_tps=num_tps, num_channels=3,
                           stage_widths=(64, 128, 256, 512)),
    motion=dict(
        _delete_=True, type='ThinPlateSplineMotion', num_tps=num_tps, num_channels=3, block_expansion=64,
        max_features=1024, num_blocks=5, scale_factor=0.25, kp_variance=0.01, multi_mask=False,
        tps_regularisation=0.01, align_corners=True, background_predictor=None, use_background=False,
        dropout_p=0.0, norm='batch'),
    compensator=dict(structure=dict(num_kp=num_tps, kp_group_size=5)),
)

motion_transfer = dict(relative=True, relative_jacobian=False, adapt_movement_scale=False)

losses = dict(equivariance=dict(jacobian_weight=0.0))

iters_per_epoch = _base_.iters_per_epoch
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[70 * iters_per_epoch, 90 * iters_per_epoch], gamma=0.1),
]


def _tps_dropout(epoch):
    # modules/model.py: p = min(epoch / dropout_inc_epoch * dropout_maxp + dropout_startp, dropout_maxp) before
    # dropout_epoch, then off
    return 0.0 if epoch >= 35 else min(epoch / 10 * 0.3 + 0.1, 0.3)


tps_dropout_schedule = [(e * iters_per_epoch, _tps_dropout(e)) for e in range(36)
                        if e == 0 or _tps_dropout(e) != _tps_dropout(e - 1)]
custom_hooks = [
    dict(type='ProgressBarHook'),
    dict(type='SampleGridHook', interval=1000, num_samples=4),
    dict(type='TrainRecordsHook'),
    dict(type='ExportWeightsHook'),
    dict(type='PartAttributeScheduleHook', part='motion', attribute='dropout_p', milestones=tps_dropout_schedule),
]

# MRFA with the official `raft_flow.prior_only: True` (config/vox1.yaml, JialeTao/MRFA @ 20f935f): a plain prior-based
# animation model, no motion refinement.  Facts read in modules/raft.py (RaftFlow.forward, the `prior_only` branch):
# * RaftFlow builds only its generator: no structure encoders (kp, kp_img, heads, pos_embedding), no corr_enc /
#   refine / to_context, so the compensator builds no StructureCorrelation and no updater;
# * every generator level i is warped by the prior `deformation` resized to it (bilinear, align_corners=True) with
#   F.grid_sample at torch's default align_corners=False; its occlusion is sigmoid(the prior occlusion logits resized
#   the same way); warp_img is the source warped by the prior flow resized to the image;
# * generator.decode gets no prior-warped features (warp_f_c None): the channel blocks are skipped
#   (fuse_prior=False).  The official generator still constructs them (15,639,936 unused parameters at vox1
#   widths); the converter skips `decoder.generator.channel_block.*` and the unused `down.weight` with a warning.
# Official parameter counts (tests/data/mrfa_variants_keys.json, prior mtia): encoder 12,283,462, dense motion
# 37,730,268, RaftFlow 43,844,739 (= thkit encoder + decoder 28,204,803 + the unused channel blocks).
# The same switch on another prior: --cfg-options model.compensator.prior_only=True model.decoder.fuse_prior=False
# (e.g. on mrfa/vox256_tps_prior).
_base_ = ['./vox256.py']

model = dict(
    compensator=dict(prior_only=True, structure=None, updater=None),
    decoder=dict(fuse_prior=False),
)

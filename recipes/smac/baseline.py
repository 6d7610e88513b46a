# SMAC ablation, paper Table 2, "baseline": no codebook at all.  The FOMM motion, the VQGAN encoder and the decoder
# with its multi-scale SFT + additive fusion remain; the decoder fuses the source features warped by the dense-motion
# flow and occlusion (no flow refinement, no appearance retrieval).  No codebook losses.
_base_ = ['./small.py']

model = dict(
    motion=dict(return_driving_heatmap=False),
    encoder=dict(out_indices=('L0', 'L1', 'L2', 'latent')),
    warp_levels=None,
    compensator=None,
)

losses = dict(codebook=None, flow_reconstruction=None)

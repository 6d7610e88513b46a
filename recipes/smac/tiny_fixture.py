# SMAC with the widths of the official parity fixture (shared/fixtures/official/smac/tiny.pt): 256 px (the official
# code accepts no other size), nf 8, ch_mult (1, 1, 1, 2), 5 keypoints, 4 heads, codebooks 16 x 16, GroupNorm with 4
# groups and the MRFA head widths divided by 8 (the fixture's patches, README §3).  A real recipe: it builds and runs.
_base_ = ['./vox256.py']

num_kp = 5
nf = 8
ch_mult = (1, 1, 1, 2)
norm_groups = 4
channels = [16, 8, 8, 8]
dim = 16

model = dict(
    keypoint_detector=dict(num_kp=num_kp, block_expansion=4, max_features=16, num_blocks=5),
    motion=dict(num_kp=num_kp, block_expansion=4, max_features=16, num_blocks=5),
    encoder=dict(nf=nf, ch_mult=ch_mult, norm_groups=norm_groups),
    compensator=dict(
        channels=channels,
        motion=dict(
            num_kp=num_kp, dim=dim, norm_groups=norm_groups,
            codebook=dict(num_codes=16, dim=dim),
            transformer=dict(num_heads=4, ffn_dim=2 * dim),
            motion_width=16, feature_dims=(16, 12), flow_dims=(16, 8), context_dim=24, refine_width=16),
        appearance=dict(
            dim=dim,
            codebook=dict(num_codes=16, dim=dim),
            transformer=dict(num_heads=4, ffn_dim=2 * dim))),
    decoder=dict(nf=nf, ch_mult=ch_mult, norm_groups=norm_groups),
)

discriminator = dict(ndf=4)

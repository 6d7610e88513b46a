# SMAC Table 2 "Baseline" at paper scale: smac/vox256 without any codebook (CPU twin: smac/baseline_small).
# Paper Table 2 row 1 "Baseline" (§4.3: no compensatory codebook at all), at paper scale: smac/vox256
# (VoxCeleb, full widths, official schedule, batch 16) without the compensator.  The FOMM motion, the VQGAN encoder
# and the decoder with its multi-scale SFT + additive fusion remain; the decoder fuses the source features warped by
# the dense-motion flow and occlusion (no flow refinement, no appearance retrieval).  No codebook losses.
# CPU-sized twin: smac/baseline_small.
_base_ = ['./vox256.py']

model = dict(
    motion=dict(return_driving_heatmap=False),
    encoder=dict(out_indices=('L0', 'L1', 'L2', 'latent')),
    warp_levels=None,
    compensator=None,
)

losses = dict(codebook=None, flow_reconstruction=None)

# the official EMA covers net_g; here that is the encoder and the decoder (there is no compensator)
custom_hooks = [dict(h, parts=['encoder', 'decoder']) if h['type'] == 'GeneratorEMAHook' else h
                for h in _base_.custom_hooks]

test_size = 128  # tests/test_recipes_build.py runs it at 128 px (the parts follow the size); smac/vox256 runs at 256

# SMAC Table 2 "Baseline", CPU-sized twin of smac/baseline (on smac/small).
# It makes the same change to smac/small that smac/baseline makes to smac/vox256 (tests/test_smac_recipes.py).
_base_ = ['./small.py']

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

# SMAC Table 2 "+MMC+MAC" (the full model) at paper scale: smac/vox256 itself (CPU twin: smac/full_small).
# Paper Table 2 row 5 "+MMC+MAC" (the full model; its row equals Table 1's VoxCeleb1 row): multi-scale
# motion and appearance codebook compensation at all 4 scales, progressive code allocation = smac/vox256 itself.
# CPU-sized twin: smac/full_small.
_base_ = ['./vox256.py']

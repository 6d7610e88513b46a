# SMAC ablation, paper Table 2 "+MMC" (motion codebooks at all scales, no appearance codebook), CPU-sized:
# smac/small with the same change as smac/mmc makes to smac/vox256.
_base_ = ['./small.py']

model = dict(compensator=dict(appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

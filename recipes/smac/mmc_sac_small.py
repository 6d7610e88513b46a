# SMAC ablation, paper Table 2 "+MMC+SAC" (appearance codebook at the coarsest scale only), CPU-sized: smac/small
# with the same change as smac/mmc_sac makes to smac/vox256.
_base_ = ['./small.py']

model = dict(compensator=dict(appearance_scales=(0, )))

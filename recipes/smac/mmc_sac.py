# SMAC ablation, paper Table 2, "MMC + SAC": multi-scale motion codebook compensation and single-scale appearance
# codebook compensation (ACC at the coarsest scale only; served by one scale, it gets the whole appearance codebook).
_base_ = ['./small.py']

model = dict(compensator=dict(appearance_scales=(0, )))

# SMAC ablation, paper Table 2, "MMC": multi-scale motion codebook compensation (MCC at all 4 scales), no appearance
# codebook.
_base_ = ['./small.py']

model = dict(compensator=dict(appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

# SMAC ablation, paper Table 2, "SMC": single-scale motion codebook compensation: MCC at the coarsest scale only
# (the 32x32 latent at 256 px); finer scales are warped with that refined flow and occlusion.  No appearance
# codebook.  Served by one scale, the progressive allocation gives it the whole motion codebook.
_base_ = ['./small.py']

model = dict(compensator=dict(motion_scales=(0, ), appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

# SMAC ablation, paper Table 2 "+SMC" (motion codebook at the coarsest scale only), CPU-sized: smac/small with the
# same change as smac/smc makes to smac/vox256.
_base_ = ['./small.py']

model = dict(compensator=dict(motion_scales=(0, ), appearance=None))

losses = dict(codebook=dict(appearance_weight=0.0))

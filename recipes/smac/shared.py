# SMAC ablation, paper Table 4, code allocation "sharing all codes": every scale retrieves from and quantises to all
# codes of each codebook (official motion_codebook_split / app_codebook_split = False).
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='shared')),
        appearance=dict(allocation=dict(type='shared'))))

# SMAC ablation, paper Table 4, code allocation "progressive" (the official default; = full.py): scale s, coarse to
# fine, uses the first s + 1 quarters of each codebook (256/512/768/1024 codes at full size).
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='progressive')),
        appearance=dict(allocation=dict(type='progressive'))))

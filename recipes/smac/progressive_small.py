# SMAC ablation, paper Table 4 "progressive" (the official default), CPU-sized: smac/small with the same (explicit)
# allocation as smac/progressive.
_base_ = ['./small.py']

model = dict(
    compensator=dict(
        motion=dict(allocation=dict(type='progressive')),
        appearance=dict(allocation=dict(type='progressive'))))

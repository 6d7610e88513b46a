# SMAC ablation, paper Table 2 "+MMC+MAC" (the full model), CPU-sized: smac/small itself.
_base_ = ['./small.py']

# SMAC Table 2 "+MMC+MAC" (the full model), CPU-sized twin of smac/full (on smac/small).
# The full model is smac/small itself.
_base_ = ['./small.py']

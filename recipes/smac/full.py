# SMAC ablation, paper Table 2, last row ("full"): multi-scale motion codebook compensation (MMC) and multi-scale
# appearance codebook compensation (MAC) at all 4 scales, progressive code allocation = small.py itself.
_base_ = ['./small.py']

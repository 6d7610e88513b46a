"""The FOMM generator's encoder (Siarohin et al., NeurIPS 2019, sec. 3.3; Johnson et al. style).

A 7x7 :class:`~thkit.layers.SameBlock2d` followed by ``num_down_blocks`` :class:`~thkit.layers.DownBlock2d`
(each halves the resolution); widths ``min(max_features, block_expansion * 2**i)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from thkit.interfaces import Encoder
from thkit.layers import DownBlock2d, SameBlock2d
from thkit.registry import ENCODERS

Tensor = torch.Tensor


@ENCODERS.register_module()
class FOMMEncoder(Encoder):
    """FOMM appearance encoder: ``first`` (7x7, pad 3) then ``down_blocks`` (FOMM sec. 3.3, "encoder").

    Returns the features fine to coarse: level 0 is the 7x7 block's output (full resolution), level ``i``
    the output of down block ``i - 1`` (stride ``2**i``).  ``out_indices`` selects levels (negative indices
    count from the coarsest; FOMM's generator only uses ``(-1,)``); ``out_channels`` lists the widths of the
    returned levels.
    """

    def __init__(self, in_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 2, out_indices: Sequence[int] | None = None, norm: str = "batch"):
        super().__init__()
        self.first = SameBlock2d(in_channels, block_expansion, kernel_size=7, padding=3, norm=norm)
        widths = [block_expansion]
        blocks = []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock2d(cin, cout, kernel_size=3, padding=1, norm=norm))
            widths.append(cout)
        self.down_blocks = nn.ModuleList(blocks)
        levels = len(widths)
        if out_indices is None:
            self.out_indices = list(range(levels))
        else:
            self.out_indices = []
            for i in out_indices:
                if not -levels <= int(i) < levels:
                    raise ValueError(f"out_indices entry {i} out of range for {levels} levels "
                                     f"(0..{levels - 1}, or negative from the coarsest)")
                self.out_indices.append(int(i) % levels)
        self.out_channels = [widths[i] for i in self.out_indices]

    def forward(self, image: Tensor) -> list[Tensor]:
        feats = [self.first(image)]
        for block in self.down_blocks:
            feats.append(block(feats[-1]))
        return [feats[i] for i in self.out_indices]

"""The FOMM generator's decoder (Siarohin et al., NeurIPS 2019, sec. 3.3): bottleneck, up blocks, 7x7, sigmoid."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from thkit.interfaces import Decoder
from thkit.layers import ResBlock2d, UpBlock2d
from thkit.layers.conditioning import build_conditioning
from thkit.registry import DECODERS

Tensor = torch.Tensor


@DECODERS.register_module()
class FOMMDecoder(Decoder):
    """FOMM occlusion-aware generator's decoding part (sec. 3.3).

    Takes the coarsest warped, occlusion-masked feature (``features[-1]``, ``T(xi) * O`` of eq. 8's
    generator), applies ``num_bottleneck_blocks`` pre-activation ResBlocks (norm -> ReLU -> conv, twice, + x),
    ``num_down_blocks`` UpBlocks (nearest x2, conv, norm, ReLU), a final 7x7 conv and a sigmoid.

    Returns ``{'prediction': (B, out_channels, H, W)}``.

    ``conditioning`` (optional, a ``conditioning`` part such as ``ScaleCodeInjection``): a per-frame code from the
    generation context is added to the input feature and after every bottleneck and up block.
    """

    def __init__(self, out_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 2, num_bottleneck_blocks: int = 6, norm: str = "batch",
                 conditioning: dict | None = None):
        super().__init__()
        width = min(max_features, block_expansion * 2**num_down_blocks)
        self.in_channels = width
        self.bottleneck = nn.ModuleList(
            ResBlock2d(width, kernel_size=3, padding=1, norm=norm) for _ in range(num_bottleneck_blocks))
        ups = []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * 2 ** (num_down_blocks - i))
            cout = min(max_features, block_expansion * 2 ** (num_down_blocks - i - 1))
            ups.append(UpBlock2d(cin, cout, kernel_size=3, padding=1, norm=norm))
        self.up_blocks = nn.ModuleList(ups)
        self.final = nn.Conv2d(block_expansion, out_channels, kernel_size=7, padding=3)
        widths = [width] * (num_bottleneck_blocks + 1) + [b.conv.out_channels for b in ups]
        self.conditioning = build_conditioning(conditioning, widths)

    def forward(self, features: list[Tensor] | Tensor, ctx: dict[str, Any] | None = None) -> dict[str, Tensor]:
        x = features if isinstance(features, Tensor) else features[-1]
        if x.shape[1] != self.in_channels:
            raise ValueError(f"FOMMDecoder expects the coarsest feature with {self.in_channels} channels, "
                             f"got {x.shape[1]} (shape {tuple(x.shape)})")
        cond = self.conditioning
        code = cond.code(ctx) if cond is not None else None
        x = cond(x, 0, code) if cond is not None else x
        for i, block in enumerate([*self.bottleneck, *self.up_blocks], 1):
            x = block(x)
            x = cond(x, i, code) if cond is not None else x
        return {"prediction": torch.sigmoid(self.final(x))}

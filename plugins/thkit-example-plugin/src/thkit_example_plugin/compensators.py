"""A residual compensator for thkit: a small convolutional refinement of each warped feature map."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from thkit.interfaces import Compensator, GenerationContext
from thkit.registry import COMPENSATORS


@COMPENSATORS.register_module()
class ResidualRefineCompensator(Compensator):
    """Adds a learned residual to each warped feature map: ``f + conv(relu(conv(f)))``, zero at initialisation.

    Args:
        channels: the width of each warped feature map the model hands over (fine to coarse).
        hidden: the width of the refinement's hidden layer.
    """

    def __init__(self, channels: Sequence[int], hidden: int = 32):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, c, 3, padding=1))
            for c in channels)
        for block in self.blocks:  # starts as the identity: a trained generator is unchanged by adding it
            nn.init.zeros_(block[-1].weight)
            nn.init.zeros_(block[-1].bias)

    def forward(self, warped: list[torch.Tensor], ctx: GenerationContext) -> dict[str, list[torch.Tensor]]:
        if len(warped) != len(self.blocks):
            raise ValueError(f"ResidualRefineCompensator has {len(self.blocks)} blocks (channels) but got "
                             f"{len(warped)} warped feature maps")
        return {"features": [f + block(f) for f, block in zip(warped, self.blocks)]}

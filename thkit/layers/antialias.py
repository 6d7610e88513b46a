"""Anti-aliased downsampling (Gaussian blur, then subsampling), as used by all FOMM-family networks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AntiAliasInterpolation2d(nn.Module):
    """Blur with a Gaussian of sigma = (1/scale - 1)/2 and size 2 round(4 sigma) + 1, then subsample.

    ``mode='slice'`` subsamples with ``[::1/scale]`` (FOMM, SMAC, MCNet); ``mode='nearest'`` uses
    ``F.interpolate(scale_factor=scale)`` (TPSMM, MRFA).  The kernel is a buffer named ``weight`` (it is in
    the official state dicts); ``persistent=False`` keeps it out of the state dict (e.g. an image pyramid
    that the official code keeps outside the network).
    """

    def __init__(self, channels: int, scale: float, mode: str = "slice", persistent: bool = True):
        super().__init__()
        if mode not in ("slice", "nearest"):
            raise ValueError(f"mode must be 'slice' or 'nearest', got {mode!r}")
        self.scale = float(scale)
        self.mode = mode
        self.groups = channels
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.ka = size // 2
        self.kb = self.ka - 1 if size % 2 == 0 else self.ka
        if scale == 1.0:
            kernel = torch.ones(1, 1)
        else:
            coords = torch.arange(size, dtype=torch.float32)
            mean = (size - 1) / 2
            g = torch.exp(-((coords - mean) ** 2) / (2 * sigma**2))
            kernel = g.view(-1, 1) * g.view(1, -1)
            kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, *kernel.shape).repeat(channels, 1, 1, 1),
                             persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight, groups=self.groups)
        if self.mode == "slice":
            step = int(1 / self.scale)
            return out[:, :, ::step, ::step]
        return F.interpolate(out, scale_factor=(self.scale, self.scale))

"""Blocks of the VQGAN / CodeFormer autoencoder lineage (Esser et al. 2021; Zhou et al. 2022), used by SMAC.

* :func:`group_norm` -- GroupNorm with eps ``1e-6`` (the lineage's ``normalize``; 32 groups by default);
* :class:`VQResBlock` -- pre-activation residual block ``x + conv2(swish(norm2(conv1(swish(norm1(x))))))``
  with a 1x1 ``conv_out`` shortcut when the width changes;
* :class:`VQAttnBlock` -- single-head spatial self-attention with 1x1 ``q``/``k``/``v``/``proj_out`` and a
  residual (computed through :func:`thkit.attention.attention`, so any backend serves it);
* :class:`VQDownsample` -- zero pad right/bottom by one, then a stride-2 3x3 convolution;
* :class:`VQUpsample` -- nearest x2 upsampling, then a 3x3 convolution.

Attribute names (``norm1``, ``conv1``, ``conv_out``, ``q``, ``proj_out``, ``conv``) follow the lineage's code, so
official state dicts map one to one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thkit.attention import attention, check_backend_name
from thkit.layers.blocks import shortcut
from thkit.layers.upsample import upsample_then_conv

Tensor = torch.Tensor

__all__ = ["group_norm", "swish", "norm_swish", "VQResBlock", "VQAttnBlock", "VQDownsample", "VQUpsample"]


def group_norm(channels: int, groups: int = 32, eps: float = 1e-6) -> nn.GroupNorm:
    """The lineage's normalisation: ``GroupNorm(groups, channels, eps=1e-6, affine=True)``."""
    if channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels cannot be split into {groups} groups; "
                         f"choose widths divisible by norm_groups={groups}")
    return nn.GroupNorm(groups, channels, eps=eps, affine=True)


def swish(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` (SiLU)."""
    return F.silu(x)


def norm_swish(norm: nn.Module, x: Tensor) -> Tensor:
    """``swish(norm(x))``; without autograd the SiLU runs in place on the norm's fresh output (one buffer less
    per call, the same values)."""
    y = norm(x)
    return F.silu(y, inplace=y is not x and shortcut("inplace"))


class VQResBlock(nn.Module):
    """Residual block: GroupNorm -> swish -> 3x3 conv, twice; 1x1 ``conv_out`` on the shortcut if widths differ."""

    def __init__(self, in_channels: int, out_channels: int | None = None, norm_groups: int = 32):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(norm_swish(self.norm1, x))
        h = self.conv2(norm_swish(self.norm2, h))
        skip = x if self.conv_out is None else self.conv_out(x)
        return h.add_(skip) if shortcut("inplace") else h + skip  # conv2's output is fresh: reuse it


class VQAttnBlock(nn.Module):
    """Spatial self-attention over all ``h * w`` positions, one head of width C, plus the input (non-local block)."""

    def __init__(self, channels: int, norm_groups: int = 32, backend: str | None = None):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.backend = None if backend is None else check_backend_name(backend)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.norm(x)
        # (B, C, h, w) -> (B, h*w, 1 head, C)
        q, k, v = (m(t).reshape(b, c, h * w).transpose(1, 2).unsqueeze(2) for m in (self.q, self.k, self.v))
        out = attention(q, k, v, backend=self.backend)
        out = out.squeeze(2).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class VQDownsample(nn.Module):
    """Halve the resolution: pad (left 0, right 1, top 0, bottom 1) with zeros, 3x3 conv, stride 2, no padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class VQUpsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    #: the convolution :func:`thkit.layers.upsample.fold_upsample` may compute at the low resolution
    upsample_conv = "conv"

    def forward(self, x: Tensor) -> Tensor:
        return upsample_then_conv(self.conv, x)

"""Nearest x2 upsampling followed by a 3x3 convolution, computed at the low resolution.

``conv3x3(upsample_nearest_x2(x))`` (padding 1) gives each output pixel from a 3x3 window of the upsampled image,
which covers only 2x2 input pixels, and which 2x2 depends on the output pixel's phase (even or odd row, even or
odd column).  So the same result is four 2x2 convolutions of ``x`` itself, one per phase, whose taps are sums of the
3x3 taps; interleaving their outputs gives the upsampled result.  That is 4 x 4 instead of 4 x 9 multiply-adds per
input pixel (2.25x fewer) and no upsampled copy of the input.  The values change only by float rounding (the summed
taps; about 1e-6 relative); zero padding at the border is the same on both sides (the upsampled image's padding row
is the input's).

Below :data:`MIN_PIXELS` input pixels (the 2x2 and 4x4 bottlenecks of the FOMM-family hourglasses, 1024-2048
channels) the convolution is bound by reading its weights, not by its multiply-adds, and the stacked 2x2 filters are
1.8x the 3x3 ones: onnxruntime ran them 0.21x (2x2 input) and 0.79x (4x4), against 1.5x at 8x8 and 1.8-2.3x above
(benchmarks/README.md), so :class:`UpsampleConv2d` upsamples and convolves as before there.

:func:`fold_upsample` swaps the convolution of every block that declares the pattern (a class attribute
``upsample_conv`` naming its convolution, whose forward calls :func:`upsample_then_conv`) for an
:class:`UpsampleConv2d`, in place: an inference lever like :func:`thkit.layers.blocks.fold_batchnorm`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MIN_PIXELS", "UpsampleConv2d", "fold_upsample", "upsample_then_conv"]

#: inputs with fewer pixels (height x width) than this upsample and convolve directly (the folded filters' reads cost
#: more than the multiply-adds they save there)
MIN_PIXELS = 64

# _TAPS[phase, tap, k]: 1 where the 2x2 tap ``tap`` of ``phase`` (0: even output row/column, 1: odd) sums the
# 3x3 tap ``k``; even outputs see input pixels (i-1, i, i), odd ones (i, i, i+1)
_TAPS = torch.tensor([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], dtype=torch.float64)


class UpsampleConv2d(nn.Module):
    """``conv(F.interpolate(x, scale_factor=2, mode='nearest'))`` of a 3x3, stride-1, padding-1 convolution, as one
    2x2 convolution of ``x`` with the four phases' filters stacked (``4 * out_channels``), then interleaved; an input
    of fewer than ``min_pixels`` pixels (default :data:`MIN_PIXELS`) is upsampled and convolved by ``conv`` itself."""

    def __init__(self, conv: nn.Conv2d, min_pixels: int = MIN_PIXELS):
        super().__init__()
        if not can_fold(conv):
            raise ValueError("UpsampleConv2d needs a Conv2d with a 3x3 kernel, stride 1, padding 1, dilation 1, "
                             "one group and zero padding")
        w = conv.weight.detach().double()
        taps = _TAPS.to(w.device)
        # (phase row, phase col, out, in, 2, 2), summed in float64 and rounded once
        k = torch.einsum("aus,bvt,oist->aboiuv", taps, taps, w)
        self.out_channels, self.min_pixels, self.direct = conv.out_channels, int(min_pixels), conv
        self.weight = nn.Parameter(k.reshape(4 * conv.out_channels, conv.in_channels, 2, 2).to(conv.weight.dtype),
                                   requires_grad=False)
        bias = conv.bias.detach().repeat(4) if conv.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if h * w < self.min_pixels:
            return upsample_then_conv(self.direct, x)
        y = F.conv2d(x, self.weight, self.bias, padding=1)  # (N, 4 * C, H + 1, W + 1)
        y = y.view(n, 2, 2, self.out_channels, h + 1, w + 1)
        rows = [torch.stack([y[:, a, b, :, a:a + h, b:b + w] for b in (0, 1)], dim=-1) for a in (0, 1)]
        return torch.stack(rows, dim=3).reshape(n, self.out_channels, 2 * h, 2 * w)


def can_fold(conv: nn.Module) -> bool:
    """Whether ``conv`` is a convolution :class:`UpsampleConv2d` can take over."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def upsample_then_conv(conv: nn.Module, x: Tensor) -> Tensor:
    """``conv`` of ``x`` upsampled x2 (nearest); an :class:`UpsampleConv2d` does both itself."""
    if isinstance(conv, UpsampleConv2d):
        return conv(x)
    return conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def fold_upsample(module: nn.Module) -> int:
    """Swap the convolution of every upsampling block in ``module`` (a class attribute ``upsample_conv`` names it)
    for an :class:`UpsampleConv2d`, in place; blocks whose convolution is not 3x3 / stride 1 / padding 1 stay.
    For inference (the new weights do not train): a module in training mode is refused.  Returns how many were
    folded."""
    from thkit.errors import ThkitError

    if module.training:
        raise ThkitError("fold_upsample: the module is in training mode; call .eval() first (the folded "
                         "convolutions are for inference)")
    folded = 0
    for block in module.modules():
        name = getattr(type(block), "upsample_conv", None)
        conv = getattr(block, name, None) if isinstance(name, str) else None
        if conv is not None and can_fold(conv):
            setattr(block, name, UpsampleConv2d(conv))
            folded += 1
    return folded

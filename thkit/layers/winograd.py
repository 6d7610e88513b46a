"""Winograd F(2x2, 3x3) convolution (Lavin & Gray, CVPR 2016): a 3x3 convolution with 16 instead of 36 multiplies
per 2x2 output tile.

Each 4x4 input tile ``d`` (stride 2) is transformed to ``B^T d B`` (adds only), multiplied per tile position by the
transformed filters ``G g G^T`` (computed once, in float64) in 16 matrix products over the channels, and the result
``m`` transformed back to the 2x2 output tile ``A^T m A`` (adds only).  The values differ from the direct
convolution by float rounding (about 1e-6 relative, ``tests/test_winograd.py``).

Whether it pays depends on the runtime and the shape.  The transforms move four times the input through memory; the
products save multiplies only where the channels are wide.  Measured on this project's CPU (``benchmarks/winograd.py
--onnxruntime``, ``benchmarks/README.md``): in onnxruntime it pays on 512-channel convolutions at 32 px and more
(alone: 1.2x for 512 -> 512 channels at 64 px), not on 64-256-channel ones.
:func:`winograd_convs` swaps the convolutions of a module that are wide enough, in place: an inference rewrite of the
ONNX export (``onnx_graphs(..., rewrites=(..., 'winograd'))``), like :func:`thkit.layers.upsample.fold_upsample`.  Not
a default rewrite: on TPSMM's whole frame it measured 1.06-1.07x in some runs and 0.95-0.97x in others here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WinogradConv2d", "can_winograd", "winograd_convs", "winograd_weights", "MIN_CHANNELS"]

#: the narrowest convolution (input and output channels) :func:`winograd_convs` swaps by default: where onnxruntime
#: ran Winograd faster than its own convolution on this project's CPU
MIN_CHANNELS = 512
#: inputs with fewer 2x2 output tiles than this (smaller than 32 x 32) run the direct convolution: in onnxruntime
#: TPSMM's frame gained as much without the 8-16-px ones (1.063x against 1.069x), whose rounding moved its keypoints
#: and prediction 200x more (9.8e-5 against 4.5e-7), and at 4 px the 16 transformed filter matrices, 16/9 the direct
#: filter's bytes, cost more than the multiplies saved (1024 -> 1024 channels: 0.61x)
MIN_TILES = 256

# the filter transform G (4x3); B^T and A^T are written out as adds in WinogradConv2d.forward
_G = torch.tensor([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=torch.float64)


def winograd_weights(weight: Tensor) -> Tensor:
    """``G g G^T`` of each (out, in) 3x3 filter, as 16 matrices ``(16, out, in)`` (computed in float64)."""
    u = torch.einsum("au,oiuv,bv->aboi", _G.to(weight.device), weight.double(), _G.to(weight.device))
    return u.reshape(16, weight.shape[0], weight.shape[1]).to(weight.dtype).contiguous()


def can_winograd(conv: nn.Module, min_channels: int = 1) -> bool:
    """Whether ``conv`` is a plain 3x3, stride-1, padding-1 convolution with at least ``min_channels`` in and out."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and min(conv.in_channels, conv.out_channels) >= min_channels)


class WinogradConv2d(nn.Module):
    """``conv(x)`` of a 3x3 / stride-1 / padding-1 convolution by Winograd F(2x2, 3x3), in operators the ONNX
    exporter writes (strided slices, adds, one batched MatMul, a pixel shuffle to interleave the 2x2 tiles).  Odd
    sizes are padded to even and cropped back; inputs with fewer than ``min_tiles`` 2x2 tiles (default
    :data:`MIN_TILES`) run the convolution itself."""

    def __init__(self, conv: nn.Conv2d, min_tiles: int | None = None):
        super().__init__()
        if not can_winograd(conv):
            raise ValueError("WinogradConv2d needs a Conv2d with a 3x3 kernel, stride 1, padding 1, dilation 1, "
                             "one group and zero padding")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.min_tiles = min_tiles
        self.direct = conv  # for small inputs; its bias serves both forms
        self.weight = nn.Parameter(winograd_weights(conv.weight.detach()).unsqueeze(1), requires_grad=False)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        th, tw = (h + 1) // 2, (w + 1) // 2
        if th * tw < (MIN_TILES if self.min_tiles is None else self.min_tiles):
            return self.direct(x)
        xp = F.pad(x, (1, 1 + w % 2, 1, 1 + h % 2))
        d = [xp[:, :, i:i + 2 * th:2] for i in range(4)]            # the 4 rows of every 4x4 tile
        r = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]     # B^T d
        v = []
        for a in range(4):
            e = [r[a][:, :, :, j:j + 2 * tw:2] for j in range(4)]   # (B^T d) B
            v += [e[0] - e[2], e[1] + e[2], e[2] - e[1], e[1] - e[3]]
        # (16, 1, K, C) @ (16, N, C, tiles): the 16 products over the channels
        m = torch.matmul(self.weight, torch.stack(v, 0).reshape(16, n, c, th * tw))
        m = m.reshape(4, 4, n, self.out_channels, th, tw)
        s = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]                 # A^T m
        out = [t for p in (0, 1) for t in (s[p][0] + s[p][1] + s[p][2], s[p][1] - s[p][2] - s[p][3])]
        y = F.pixel_shuffle(torch.stack(out, 2).reshape(n, 4 * self.out_channels, th, tw), 2)
        if h % 2 or w % 2:
            y = y[:, :, :h, :w]
        bias = self.direct.bias
        return y if bias is None else y + bias.view(1, -1, 1, 1)


def winograd_convs(module: nn.Module, min_channels: int | None = None) -> int:
    """Swap every plain 3x3 convolution inside ``module`` with at least ``min_channels`` input and output channels
    (default :data:`MIN_CHANNELS`) for a :class:`WinogradConv2d`, in place.  For inference (the new weights do not
    train): a module in training mode is refused.  Returns how many were swapped."""
    from thkit.layers.blocks import swap_modules

    min_channels = MIN_CHANNELS if min_channels is None else int(min_channels)
    return swap_modules(module, lambda m: WinogradConv2d(m) if can_winograd(m, min_channels) else None,
                        "winograd_convs")

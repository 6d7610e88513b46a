"""Non-overlapping ``p x p`` windows of a feature map as tokens, and back (a patch embedding, as ViT / Swin).

:class:`WindowEmbedding` cuts a ``(B, C, h p, w p)`` feature into windows, flattens each in ``(p1, p2, c)`` order
and projects it with one ``Linear(C p² -> D)``: tokens ``(B, h w, D)``.  :class:`WindowUnembedding` projects each
token back with ``Linear(D -> C p²)`` and puts the windows in place.  Used by SMAC's appearance compensation
(:mod:`thkit.compensate.smac`), whose state-dict layout (``proj.weight`` in that ``(p1, p2, c)`` order) they keep.

The same maps as convolutions: a window embedding is a ``p x p`` convolution of stride ``p`` (its kernel is the
linear weight reshaped), a window unembedding a ``1 x 1`` convolution to ``C p²`` channels ordered ``(c, p1, p2)``
followed by a pixel shuffle.  The values change only by float rounding (the same products, summed in another order).
Which form is faster depends on the runtime: torch runs the linear form faster on this CPU; onnxruntime runs the
convolution form faster, because its transposes of the partitioned windows are slow (SMAC at 256 px: 4.8 % of a
frame, the frame 3-7 % faster without them, ``benchmarks/README.md``).  :func:`conv_windows` swaps every window
(un)embedding of a module for its convolution form, in place: an inference rewrite like
:func:`thkit.layers.upsample.fold_upsample`, applied by the ONNX export (:data:`thkit.export.REWRITES`,
``'window'``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["window_partition", "window_reverse", "WindowEmbedding", "WindowUnembedding", "WindowEmbeddingConv",
           "WindowUnembeddingConv", "conv_windows"]


def window_partition(x: Tensor, patch: int) -> Tensor:
    """``(B, C, h p, w p) -> (B, h w, p p C)``: non-overlapping ``p x p`` windows, row-major, each flattened in
    ``(p1, p2, c)`` order (the einops pattern ``b c (h p1) (w p2) -> b (h w) (p1 p2 c)``)."""
    b, c, hh, ww = x.shape
    if hh % patch or ww % patch:
        raise ValueError(f"a {hh}x{ww} feature cannot be cut into {patch}x{patch} windows")
    h, w = hh // patch, ww // patch
    return x.reshape(b, c, h, patch, w, patch).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, patch * patch * c)


def window_reverse(tokens: Tensor, patch: int, grid: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B, h w, p p C) -> (B, C, h p, w p)`` for ``grid = (h, w)``."""
    b, n, d = tokens.shape
    h, w = grid
    c = d // (patch * patch)
    if n != h * w or c * patch * patch != d:
        raise ValueError(f"{n} tokens of width {d} do not form a {h}x{w} grid of {patch}x{patch} windows")
    return tokens.reshape(b, h, w, patch, patch, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * patch, w * patch)


class WindowEmbedding(nn.Module):
    """``p x p`` windows of a C-channel feature -> one D-wide token each (``Linear(C p² -> D)``; at ``p = 1`` a
    per-pixel projection).  Returns ``(tokens (B, L, D), (h, w))``."""

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.channels, self.dim, self.patch = channels, dim, patch
        self.proj = nn.Linear(channels * patch * patch, dim)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, patch={self.patch}"

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        if x.shape[1] != self.channels:
            raise ValueError(f"window embedding expects {self.channels} channels, got {x.shape[1]}")
        grid = (x.shape[2] // self.patch, x.shape[3] // self.patch)
        return self.proj(window_partition(x, self.patch)), grid


class WindowUnembedding(nn.Module):
    """``Linear(D -> C p²)`` per token, then the windows are put back in place: ``(B, C, h p, w p)``."""

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        self.channels, self.dim, self.patch = channels, dim, patch
        self.proj = nn.Linear(dim, channels * patch * patch)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, patch={self.patch}"

    def forward(self, tokens: Tensor, grid: Sequence[int]) -> Tensor:
        return window_reverse(self.proj(tokens), self.patch, grid)


class WindowEmbeddingConv(nn.Module):
    """:class:`WindowEmbedding` as one ``p x p`` convolution of stride ``p`` (kernel = the linear weight, reshaped
    from ``(D, p1 p2 c)`` to ``(D, c, p1, p2)``), its ``(B, D, h, w)`` output transposed to tokens."""

    def __init__(self, embedding: WindowEmbedding):
        super().__init__()
        p, c, d = embedding.patch, embedding.channels, embedding.dim
        self.channels, self.dim, self.patch = c, d, p
        w = embedding.proj.weight.detach().reshape(d, p, p, c).permute(0, 3, 1, 2).contiguous()
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = nn.Parameter(embedding.proj.bias.detach().clone(), requires_grad=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, patch={self.patch}"

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        if x.shape[1] != self.channels:
            raise ValueError(f"window embedding expects {self.channels} channels, got {x.shape[1]}")
        if x.shape[2] % self.patch or x.shape[3] % self.patch:
            raise ValueError(f"a {x.shape[2]}x{x.shape[3]} feature cannot be cut into {self.patch}x{self.patch} "
                             "windows")
        y = F.conv2d(x, self.weight, self.bias, stride=self.patch)
        return y.flatten(2).transpose(1, 2), (y.shape[2], y.shape[3])


class WindowUnembeddingConv(nn.Module):
    """:class:`WindowUnembedding` as a ``1 x 1`` convolution of the token grid to ``C p²`` channels in ``(c, p1,
    p2)`` order (the linear's rows permuted) and a pixel shuffle."""

    def __init__(self, unembedding: WindowUnembedding):
        super().__init__()
        p, c, d = unembedding.patch, unembedding.channels, unembedding.dim
        self.channels, self.dim, self.patch = c, d, p
        w = unembedding.proj.weight.detach().reshape(p, p, c, d).permute(2, 0, 1, 3).reshape(c * p * p, d, 1, 1)
        b = unembedding.proj.bias.detach().reshape(p, p, c).permute(2, 0, 1).reshape(-1)
        self.weight = nn.Parameter(w.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(b.contiguous(), requires_grad=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, patch={self.patch}"

    def forward(self, tokens: Tensor, grid: Sequence[int]) -> Tensor:
        b, n, d = tokens.shape
        h, w = grid
        if n != h * w or d != self.dim:
            raise ValueError(f"{n} tokens of width {d} do not form a {h}x{w} grid of width {self.dim}")
        y = F.conv2d(tokens.transpose(1, 2).reshape(b, d, h, w), self.weight, self.bias)
        return F.pixel_shuffle(y, self.patch) if self.patch > 1 else y


def conv_windows(module: nn.Module) -> int:
    """Swap every :class:`WindowEmbedding` / :class:`WindowUnembedding` inside ``module`` for its convolution form,
    in place.  For inference (the new weights do not train): a module in training mode is refused.  Returns how
    many were swapped."""
    from thkit.layers.blocks import swap_modules

    forms = {WindowEmbedding: WindowEmbeddingConv, WindowUnembedding: WindowUnembeddingConv}
    return swap_modules(module, lambda m: forms[type(m)](m) if type(m) in forms else None, "conv_windows")

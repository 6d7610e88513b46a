"""Bilinear resizing (``align_corners=True``) of a map known only on some rows and columns.

A bilinear downsampling reads few of its input's pixels: from 256 to 64 rows it reads 124 of the 256 rows, from
256 to 32 rows 62 (:func:`bilinear_reads` lists a few more, a margin for float rounding).  A map that is computed
only to be downsampled so (SMAC's motion step warps a 256-px source feature and projects it, only to resize both to
64 and 32 px) need only be computed on the rows and columns the resize reads: :func:`bilinear_reads` lists them,
:func:`bilinear_weights` gives the resize's weights on them and :func:`resize_from_reads` applies those, with the
values of ``F.interpolate(..., mode='bilinear', align_corners=True)`` of the whole map to float rounding (the same
two-tap sums, associated in another order).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["bilinear_reads", "bilinear_weights", "resize_from_reads"]


def _sources(n_in: int, n_out: int) -> list[float]:
    """The input coordinate of each output pixel (``align_corners=True``), computed in float32 as torch's CPU kernel
    computes it (``scale = (n_in - 1) / (n_out - 1)``, then ``scale * i``): float64 coordinates would move the taps'
    weights by up to 1e-5 at 256 px."""
    if n_out == 1:
        return [0.0]
    scale = np.float32(n_in - 1) / np.float32(n_out - 1)
    return [float(np.float32(scale * np.float32(i))) for i in range(n_out)]


@lru_cache(maxsize=64)
def _reads(n_in: int, n_out: int) -> tuple[int, ...]:
    read = set()
    for s in _sources(n_in, n_out):
        # the two taps around s, widened where float32 rounding of s could move it across an integer
        lo, hi = math.floor(s - 1e-3), math.ceil(s + 1e-3)
        read.update(i for i in range(lo, hi + 1) if 0 <= i < n_in and abs(i - s) < 1 + 1e-3)
    return tuple(sorted(read))


def bilinear_reads(n_in: int, n_out: int) -> list[int]:
    """The input indices (sorted) that a bilinear resize from ``n_in`` to ``n_out`` samples (``align_corners=True``),
    with a margin: every index torch's kernel reads is among them."""
    return list(_reads(int(n_in), int(n_out)))


def bilinear_weights(n_in: int, n_out: int, reads: Sequence[int], dtype=torch.float32, device=None) -> Tensor:
    """``(n_out, len(reads))``: the resize's weights of the input indices ``reads`` (which must hold every index
    :func:`bilinear_reads` gives), each row the two taps ``1 - t`` and ``t`` around its source coordinate."""
    pos = {r: k for k, r in enumerate(reads)}
    w = torch.zeros(n_out, len(reads), dtype=torch.float64)
    for o, s in enumerate(_sources(n_in, n_out)):
        i0 = min(int(math.floor(s)), n_in - 1)
        t = np.float32(s - i0) if i0 < n_in - 1 else np.float32(0.0)  # the last index has no right neighbour
        for i, v in ((i0, float(np.float32(1.0) - t)), (i0 + 1, float(t))):
            if v != 0.0:
                if i not in pos:
                    raise ValueError(f"a resize from {n_in} to {n_out} reads index {i}, which is not among reads")
                w[o, pos[i]] = v
    return w.to(dtype=dtype, device=device)


def resize_from_reads(x: Tensor, weights_h: Tensor, weights_w: Tensor) -> Tensor:
    """``(B, C, R, S)`` values on the rows / columns a resize reads -> the resized ``(B, C, H, W)``, with
    ``weights_h`` ``(H, R)`` and ``weights_w`` ``(W, S)`` from :func:`bilinear_weights`."""
    return torch.matmul(weights_h.to(x.dtype), torch.matmul(x, weights_w.to(x.dtype).t()))

"""Conditioning of a generator's layers on a per-frame code (kind ``conditioning``).

A decoder that takes ``conditioning=dict(type=..., ...)`` builds the part with :func:`build_conditioning`, handing
it the widths of the layers it conditions, reads the code once per call (:meth:`Conditioning.code`, from the
:class:`~thkit.interfaces.GenerationContext`) and, after each of those layers, calls ``conditioning(x, i, code)``.
Without the option a decoder is unchanged (same modules, same state-dict keys).

:class:`ScaleCodeInjection` is OSTNet's "scale embedding" (Hong & Xu, arXiv 2407.09965, sec. 3, fig. 2): the scale
code ``z`` that the scale transformation predicts is added, after a per-layer linear projection, to the features
of every generator layer after warping.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from thkit.builder import build
from thkit.errors import ThkitError
from thkit.interfaces import Part
from thkit.registry import CONDITIONINGS

Tensor = torch.Tensor


class Conditioning(Part):
    """``forward(x, index, code) -> x`` conditioned on ``code``; ``code(ctx)`` reads the code from the context.

    ``bind(channels)`` is called once by the decoder that owns the part, with the widths of the layers it
    conditions (in the order of ``index``); it creates the per-layer parameters.
    """

    contract_attrs = ("forward", "bind", "code")

    def bind(self, channels: Sequence[int]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def code(self, ctx: Mapping[str, Any] | None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def build_conditioning(cfg: Mapping[str, Any] | None, channels: Sequence[int]) -> Conditioning | None:
    """Build the ``conditioning`` part of a decoder (``None`` stays ``None``) and bind it to ``channels``."""
    part = build("conditioning", cfg, "conditioning")
    if part is not None:
        part.bind([int(c) for c in channels])
    return part


@CONDITIONINGS.register_module()
class ScaleCodeInjection(Conditioning):
    """OSTNet's scale-code injection (sec. 3, "scale embedding" into every layer of the generator, fig. 2).

    For layer ``i`` of width ``C_i``: ``x <- x + W_i z`` (broadcast over the spatial positions), ``W_i`` a linear
    map ``dim -> C_i``.  The paper states an element-wise addition after warping; the per-layer linear projection
    (needed because layer widths differ from ``dim``) and its zero initialisation (the generator starts as the one
    without injection) are our choices.

    ``z`` is read from the generation context: ``ctx['motion'][key]`` (``(B, dim)``; the scale-rectifying motion
    part puts its code there under ``scale_code``).  A context without it is an error naming the key.

    Args:
        dim: width of the code ``z``.
        key: name of the code in the motion part's output.
        zero_init: initialise the projections to zero.
    """

    def __init__(self, dim: int = 64, key: str = "scale_code", zero_init: bool = True):
        super().__init__()
        if int(dim) < 1:
            raise ValueError(f"ScaleCodeInjection: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.key = str(key)
        self.zero_init = bool(zero_init)
        self.proj = nn.ModuleList()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, key={self.key!r}, layers={len(self.proj)}"

    def bind(self, channels: Sequence[int]) -> None:
        if len(self.proj):
            raise ThkitError("ScaleCodeInjection is already bound to a decoder's layers; build one per decoder")
        for c in channels:
            lin = nn.Linear(self.dim, int(c))
            if self.zero_init:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
            self.proj.append(lin)

    def code(self, ctx: Mapping[str, Any] | None) -> Tensor:
        motion = (ctx or {}).get("motion") or {}
        z = motion.get(self.key) if isinstance(motion, Mapping) else None
        if z is None:
            have = ", ".join(map(str, motion)) if isinstance(motion, Mapping) else "nothing"
            raise ThkitError(f"ScaleCodeInjection needs the code {self.key!r} in the motion output (a scale-rectifying "
                             f"motion part such as ScaleRectifiedMotion gives it); the motion output has {have}")
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ThkitError(f"ScaleCodeInjection expects the code {self.key!r} as (B, {self.dim}), got "
                             f"{tuple(z.shape)}")
        return z

    def forward(self, x: Tensor, index: int, code: Tensor) -> Tensor:
        if not 0 <= index < len(self.proj):
            raise IndexError(f"ScaleCodeInjection has {len(self.proj)} layers, asked for layer {index}")
        offset = self.proj[index](code)
        if offset.shape[1] != x.shape[1]:
            raise ValueError(f"ScaleCodeInjection layer {index} is bound to {offset.shape[1]} channels, the feature "
                             f"has {x.shape[1]} (shape {tuple(x.shape)})")
        return x + offset.reshape(*offset.shape, *([1] * (x.dim() - 2)))


__all__ = ["Conditioning", "ScaleCodeInjection", "build_conditioning"]

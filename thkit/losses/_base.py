"""What every thkit training loss shares: a recipe ``weight`` and the names of its inputs.

A loss is a small :class:`torch.nn.Module` with a typed ``forward`` that returns either one scalar or a
dict of named scalars, each already multiplied by its recipe weight.  ``default_inputs`` maps the
arguments of ``forward`` to keys of the *training namespace* (see :mod:`thkit.losses.bundle`), so a
:class:`~thkit.losses.bundle.LossBundle` can call it without knowing its signature; a recipe overrides
the mapping with ``inputs=dict(arg='key')``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from thkit.interfaces import LossModule

Tensor = torch.Tensor


class Loss(LossModule):
    """Base class of the built-in losses.

    Args:
        weight: the recipe weight, multiplied into every term the loss returns.
    """

    #: forward argument -> training-namespace key (the defaults a recipe can override with ``inputs=``)
    default_inputs: ClassVar[dict[str, str]] = {}
    #: for losses with a discriminator side: ``discriminator_loss`` argument -> namespace key
    discriminator_inputs: ClassVar[dict[str, str]] = {}
    #: keys of a returned dict that are logged statistics (detached), not loss terms
    stat_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"


def as_list(x: Tensor | Sequence[Tensor], what: str) -> list[Tensor]:
    """A tensor or a sequence of tensors as a list (clear error otherwise)."""
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)) and all(isinstance(t, Tensor) for t in x):
        return list(x)
    raise TypeError(f"{what} must be a tensor or a list of tensors, got {type(x).__name__}")


def check_same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def zero_like_device(*refs: Any) -> Tensor:
    """A scalar 0 on the device (and float dtype) of the first tensor found in ``refs``."""
    for r in refs:
        if isinstance(r, Tensor):
            return r.new_zeros(()) if r.is_floating_point() else torch.zeros((), device=r.device)
        if isinstance(r, Mapping):
            for v in r.values():
                if isinstance(v, Tensor):
                    return zero_like_device(v)
    return torch.zeros(())

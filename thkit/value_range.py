"""Image value ranges: the one conversion between an ``input_range`` and [0, 1].

Models and datasets use images in ``(0, 1)`` (FOMM, TPSMM) or ``(-1, 1)`` (SMAC); metrics, pictures and the
VGG / timm normalisation want [0, 1].  Every such conversion goes through :func:`to_unit` / :func:`from_unit`,
which are exact no-ops (the same object back) for ``(0, 1)``.  They work on tensors, NumPy arrays and floats.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

UNIT = (0.0, 1.0)


def as_range(input_range: Sequence[float], what: str = "input_range") -> tuple[float, float]:
    """``input_range`` as a ``(low, high)`` pair of floats; ``ValueError`` unless it is two numbers, high > low."""
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (low, high), e.g. (0, 1) or (-1, 1); got {input_range!r}") from None
    if not hi > lo:
        raise ValueError(f"{what} must be (low, high) with high > low, e.g. (0, 1) or (-1, 1); got {(lo, hi)}")
    return lo, hi


def is_unit(input_range: Sequence[float]) -> bool:
    """Whether ``input_range`` is ``(0, 1)``."""
    return (float(input_range[0]), float(input_range[1])) == UNIT


def to_unit(x: T, input_range: Sequence[float]) -> T:
    """Values in ``input_range`` -> [0, 1]: ``(x - low) / (high - low)``; ``x`` itself for ``(0, 1)``.

    Nothing is clamped (callers that draw or quantise clamp themselves)."""
    lo, hi = float(input_range[0]), float(input_range[1])
    if (lo, hi) == UNIT:
        return x
    return (x - lo) / (hi - lo)


def from_unit(x: T, input_range: Sequence[float]) -> T:
    """Values in [0, 1] -> ``input_range``: ``x * (high - low) + low``; ``x`` itself for ``(0, 1)``."""
    lo, hi = float(input_range[0]), float(input_range[1])
    if (lo, hi) == UNIT:
        return x
    return x * (hi - lo) + lo


__all__ = ["UNIT", "as_range", "from_unit", "is_unit", "to_unit"]

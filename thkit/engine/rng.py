"""Capture and restore every random number generator a training step draws from.

A resumed run continues with the exact random stream of an uninterrupted one only if the generators are
restored: the model side draws from torch's global generators (e.g. the random transform of the
equivariance loss), so their states go into every checkpoint (plain tensors and numbers: readable with
``weights_only=True``) and are restored right before the first resumed iteration.  The data side does not
draw from them at all (see :class:`thkit.engine.data.SeededDataset`).
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The state of python's, numpy's and torch's (CPU and CUDA) global generators, as plain data."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(name), np.asarray(keys).astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in state["cuda"]])


@contextlib.contextmanager
def isolated_rng(seed: int | None = None) -> Iterator[None]:
    """Run a block without disturbing the global generators (and, with ``seed``, from a fixed state).

    Used for everything that is not a training step (data loading, validation, sample images), so that
    those never shift the random stream of the training steps.
    """
    saved = capture_rng_state()
    try:
        if seed is not None:
            seed = int(seed) % (2**32)
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        yield
    finally:
        restore_rng_state(saved)


__all__ = ["capture_rng_state", "isolated_rng", "restore_rng_state"]

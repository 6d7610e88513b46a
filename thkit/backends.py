"""What a streaming animator drives for a ``--backend`` / ``--precision``: the torch model itself, its ONNX export
run by onnxruntime (:mod:`thkit.export`), or that export with its convolutions quantized to int8
(:mod:`thkit.quantize`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from thkit.export import OnnxModel, cache_dir, check_backend
from thkit.quantize import load_int8

__all__ = ["backend_model"]


def animator_precision(backend: str, precision: str | None) -> str | None:
    """The autocast precision the animator applies to :func:`backend_model`'s result: ``precision`` with the torch
    backend; none with onnxruntime, whose graphs carry their own (float32, or int8)."""
    return None if backend == "onnxruntime" else precision


def backend_model(model: torch.nn.Module, backend: str = "torch", precision: str | None = None,
                  device: torch.device | str = "cpu", cache: bool = True,
                  motion: Mapping[str, Any] | None = None, nnpack: bool = False) -> Any:
    """What :class:`~thkit.inference.stream.StreamingAnimator` should drive for ``backend``: ``model`` itself
    (``'torch'``) or its export run by onnxruntime (``'onnxruntime'``; CPU; float32, or ``precision='int8'``: the
    frame graph's convolutions quantized, :func:`thkit.quantize.load_int8`, calibrated with the motion transfer
    ``motion``), after :func:`check_backend`.  The export comes from the cache (:meth:`OnnxModel.cached`: exported
    once per weights, recipe, size and thkit) unless ``cache`` is False or ``$THKIT_ONNX_CACHE`` is ``off``; then it
    is made in memory (:meth:`OnnxModel.from_model`).  ``nnpack``: the float32 graphs' wide 3x3 convolutions run by
    NNPACK's Winograd (:mod:`thkit.nnpack`).  The animator then runs the graphs as they are (no autocast)."""
    check_backend(backend, precision, device, nnpack)
    if backend == "torch":
        return model
    if precision == "int8":
        return load_int8(model.cpu(), dict(motion or {}), cache=cache)
    if cache and cache_dir() is not None:
        return OnnxModel.cached(model.cpu(), nnpack=nnpack)
    return OnnxModel.from_model(model.cpu(), nnpack=nnpack)

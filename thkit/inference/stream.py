"""Streaming, cached inference: one source image animated by a stream of driving frames.

What depends on the source only is computed once per video, not per frame
(:meth:`TalkingHeadModel.encode_source`): the source keypoints, the encoder features and the motion
estimator's source-only inputs (FOMM / TPSMM: the downsampled source and its keypoint Gaussians).  The
first driving frame fixes the rest of the per-video state of motion transfer (:class:`MotionTransfer`: the
first frame's keypoints, its inverse Jacobians and the adapt-scale factor from the two convex hulls).
Driving frames are then processed in batches; the batch-1 source cache is expanded to the batch (a view,
no copy).

:func:`animate_per_frame` is the plain reference path (what the official demos do: the whole forward pass,
source encoding included, once per frame); the streaming path gives the same frames (tests check 1e-5).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from thkit.transfer import movement_scale, transfer_motion

Tensor = torch.Tensor

__all__ = ["MotionTransfer", "StreamingAnimator", "PerFrameAnimator", "animate_per_frame", "PRECISIONS",
           "resolve_precision"]

#: ``--precision`` names and the autocast dtype of each (``None``: plain float32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class MotionTransfer:
    """:func:`thkit.transfer.transfer_motion` with the per-video quantities computed once.

    ``value = kp_S + s (kp_Dt - kp_D1)``, ``J = (J_Dt J_D1^-1) J_S`` (relative), or the driving keypoints as
    they are (absolute).  ``s`` (adapt-scale, convex-hull areas of ``kp_S`` and ``kp_D1``) and ``J_D1^-1``
    are computed by :meth:`set_initial`; the arithmetic per frame is that of ``transfer_motion`` (same
    operations, same order), so both give the same numbers.
    """

    def __init__(self, kp_source: dict[str, Tensor], relative: bool = True, relative_jacobian: bool = True,
                 adapt_movement_scale: bool = False, control: Any = None):
        self.kp_source = kp_source
        #: optional :class:`thkit.transfer_control.MotionControl`: aligns the source to the first driving frame
        #: (``control.align``, in :meth:`set_initial`) and edits every transferred frame (``control.edit``)
        self.control = control
        self.relative = bool(relative)
        self.relative_jacobian = bool(relative_jacobian) and kp_source.get("jacobian") is not None
        self.adapt_movement_scale = bool(adapt_movement_scale)
        self.kp_initial: dict[str, Tensor] | None = None
        self.scale: Tensor | None = None
        self._inv_initial_jacobian: Tensor | None = None

    def set_initial(self, kp_initial: dict[str, Tensor]) -> None:
        """Fix the first driving frame's keypoints (batch 1) and what follows from them."""
        self.kp_initial = {k: v[:1] for k, v in kp_initial.items()}
        if not self.relative:
            return
        if self.control is not None:
            self.kp_source = self.control.align(self.kp_source, self.kp_initial)
        if self.adapt_movement_scale:
            self.scale = movement_scale(self.kp_source, self.kp_initial).view(-1, 1, 1)
        if self.relative_jacobian:
            if self.kp_initial.get("jacobian") is None:
                raise ValueError("relative_jacobian needs Jacobians from the keypoint detector")
            self._inv_initial_jacobian = torch.inverse(self.kp_initial["jacobian"])

    def __call__(self, kp_driving: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.kp_initial is None:
            self.set_initial(kp_driving)
        out = dict(kp_driving)
        if not self.relative:
            return out if self.control is None else self.control.edit(out)
        diff = kp_driving["value"] - self.kp_initial["value"]
        if self.scale is not None:
            diff = diff * self.scale
        out["value"] = diff + self.kp_source["value"]
        if self._inv_initial_jacobian is not None:
            change = torch.matmul(kp_driving["jacobian"], self._inv_initial_jacobian)
            out["jacobian"] = torch.matmul(change, self.kp_source["jacobian"])
        return out if self.control is None else self.control.edit(out)


def default_batch_size(device: torch.device | str) -> int:
    """Driving frames per forward pass when none is given: 1 on the CPU, 8 on CUDA.

    On the CPU, batching does not pay (``benchmarks/animate.py``, 2026-11-21, 256x256: streaming at batch 1 runs
    FOMM at 1.30 frames/s and SMAC at 0.315, at batch 4 at 1.19 and 0.288) and batch 1 is bit-identical to the
    per-frame forward, while at batch >= 2 the CPU kernels' batch-size-dependent rounding shows (SMAC: 4.5e-5).
    """
    return 8 if torch.device(device).type == "cuda" else 1


def resolve_batch_size(batch_size: int | None, device: torch.device | str) -> int:
    """``batch_size`` as given, or :func:`default_batch_size` of ``device`` when None (the ``--batch-size`` of
    ``thkit animate`` / ``eval``); :class:`~thkit.inference.errors.InferenceError` below 1."""
    if batch_size is None:
        return default_batch_size(device)
    if int(batch_size) < 1:
        from thkit.inference.errors import InferenceError

        raise InferenceError(f"--batch-size must be >= 1, got {batch_size}")
    return int(batch_size)


def resolve_precision(precision: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (``'fp32'``: ``None``, ``'bf16'``, ``'fp16'``) on ``device``, or an
    :class:`~thkit.inference.errors.InferenceError` (one line) for a name or a device that does not support it:
    fp16 runs on CUDA only (a CPU without float16 arithmetic emulates it: slower than fp32), bf16 on the CPU and on
    GPUs with bfloat16."""
    from thkit.inference.errors import InferenceError

    name = "fp32" if precision is None else str(precision).strip().lower()
    if name not in PRECISIONS:
        raise InferenceError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if name == "fp16" and dev.type != "cuda":
        raise InferenceError(f"--precision fp16 needs a CUDA device, not {dev.type} (torch emulates float16 on this "
                             "kind of device, slower than fp32); use --precision bf16 there")
    if name == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InferenceError(f"--precision bf16: {torch.cuda.get_device_name(dev)} has no bfloat16; use fp16")
    if name != "fp32" and dev.type not in ("cpu", "cuda"):
        raise InferenceError(f"--precision {name} is supported on cpu and cuda devices, not {dev.type}")
    return PRECISIONS[name]


def _float32(kp: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keypoints in float32 (motion transfer's convex hulls go through numpy, which has no bfloat16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in kp.items()}


class StreamingAnimator:
    """Animate one source image with a stream of driving frames, in batches, with a per-video cache.

    Args:
        model: a :class:`~thkit.models.talking_head.TalkingHeadModel` (``encode_source`` / ``detect`` /
            ``animate``), in eval mode.
        relative, relative_jacobian, adapt_movement_scale: motion transfer (a recipe's ``motion_transfer``).
        batch_size: driving frames per forward pass (default: :func:`default_batch_size` of the model's device).
        pass_driving: give the driving frames to the model (reconstruction: e.g. TPSMM's background motion
            predictor then runs, as in the official reconstruction; the official animation demos do not).
        keypoint_transfer: a network ``(kp_source, kp_driving) -> keypoints`` used instead of motion transfer
            (a recipe's animation mode, :func:`thkit.inference.animate.animation_mode_network`).
        control: a :class:`thkit.transfer_control.MotionControl` (pose alignment, pose / expression edits).
        precision: ``'fp32'`` (default), ``'bf16'`` or ``'fp16'`` (:func:`resolve_precision`): the networks run
            under ``torch.autocast`` in that dtype; keypoints and motion transfer stay float32 (the adapt-scale
            hulls are computed by numpy/scipy, which have no bfloat16) and predictions come back as float32.

    Usage::

        anim = StreamingAnimator(model, relative=True)
        anim.set_source(source)               # (1, C, H, W), once per video
        for pred in anim.run(frames):         # frames: iterable of (C, H, W) tensors
            ...                               # pred: (C, H, W)
    """

    def __init__(self, model: torch.nn.Module, relative: bool = True, relative_jacobian: bool = True,
                 adapt_movement_scale: bool = False, batch_size: int | None = None, pass_driving: bool = False,
                 keypoint_transfer: torch.nn.Module | None = None, control: Any = None,
                 precision: str | None = None):
        params = getattr(model, "parameters", None)  # a stand-in (thkit.export.OnnxModel) may have none
        param = next(params(), None) if params is not None else None
        device = param.device if param is not None else torch.device("cpu")
        if batch_size is None:
            batch_size = default_batch_size(device)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.relative = relative
        self.relative_jacobian = relative_jacobian
        self.adapt_movement_scale = adapt_movement_scale
        self.batch_size = int(batch_size)
        self.pass_driving = bool(pass_driving)
        self.keypoint_transfer = keypoint_transfer
        self.control = control
        self.precision = "fp32" if precision is None else str(precision).strip().lower()
        self.autocast_dtype = resolve_precision(self.precision, device)
        self.device_type = device.type
        self.cache: dict[str, Any] | None = None
        self.transfer: MotionTransfer | None = None

    def _autocast(self):
        """``torch.autocast`` in the animator's precision (nothing for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def set_source(self, source: Tensor) -> None:
        """Encode the source (batch 1) once and reset the driving state."""
        if source.dim() == 3:
            source = source.unsqueeze(0)
        if source.shape[0] != 1:
            raise ValueError(f"set_source takes one source image, got a batch of {source.shape[0]}")
        with self._autocast():
            cache = self.model.encode_source(source)
        if self.autocast_dtype is not None:
            cache["kp_source"] = _float32(cache["kp_source"])
        self.cache = cache
        self.reset_driving()

    def reset_driving(self) -> None:
        """Start a new driving video (its first frame becomes the reference of relative motion)."""
        if self.cache is None:
            raise RuntimeError("call set_source first")
        self.transfer = MotionTransfer(self.cache["kp_source"], self.relative, self.relative_jacobian,
                                       self.adapt_movement_scale, control=self.control)

    @torch.inference_mode()
    def step(self, driving: Tensor) -> Tensor:
        """Animate a batch of driving frames ``(B, C, H, W)``; returns predictions ``(B, C, H, W)``."""
        if self.transfer is None:
            raise RuntimeError("call set_source first")
        with self._autocast():
            kp_driving = self.model.detect(driving)
        if self.autocast_dtype is not None:
            kp_driving = _float32(kp_driving)
        if self.keypoint_transfer is not None:
            n = driving.shape[0]
            kp_source = {k: v.expand(n, *v.shape[1:]) for k, v in self.cache["kp_source"].items()}
            kp = self.keypoint_transfer(kp_source, kp_driving)
            if self.control is not None:
                kp = self.control.edit(kp)
        else:
            kp = self.transfer(kp_driving)
        with self._autocast():
            out = self.model.animate(self.cache, kp, driving=driving if self.pass_driving else None)
        return out["prediction"] if self.autocast_dtype is None else out["prediction"].float()

    def run(self, frames: Iterable[Tensor]) -> Iterator[Tensor]:
        """Predictions for ``frames`` (each ``(C, H, W)``), one per frame, computed ``batch_size`` at a time."""
        batch: list[Tensor] = []
        for f in frames:
            batch.append(f)
            if len(batch) == self.batch_size:
                yield from self.step(torch.stack(batch))
                batch = []
        if batch:
            yield from self.step(torch.stack(batch))


class PerFrameAnimator:
    """The plain reference path, one driving frame at a time: the full forward pass per frame (the source is
    re-encoded every time) and :func:`thkit.transfer.transfer_motion` (hull areas recomputed every frame).
    Source keypoints and the first frame's keypoints are computed once, as in the official demos."""

    def __init__(self, model: torch.nn.Module, relative: bool = True, relative_jacobian: bool = True,
                 adapt_movement_scale: bool = False, pass_driving: bool = False):
        self.model = model
        self.relative, self.relative_jacobian = relative, relative_jacobian
        self.adapt_movement_scale, self.pass_driving = adapt_movement_scale, pass_driving
        self.source: Tensor | None = None

    @torch.inference_mode()
    def set_source(self, source: Tensor) -> None:
        self.source = source.unsqueeze(0) if source.dim() == 3 else source
        self.kp_source = self.model.detect(self.source)
        self.kp_initial = None

    @torch.inference_mode()
    def step(self, frame: Tensor) -> Tensor:
        """One driving frame ``(C, H, W)`` -> its prediction ``(C, H, W)``."""
        d = frame.unsqueeze(0)
        kp_d = self.model.detect(d)
        if self.kp_initial is None:
            self.kp_initial = kp_d
        kp = transfer_motion(self.kp_source, kp_d, self.kp_initial, relative=self.relative,
                             relative_jacobian=self.relative_jacobian and kp_d.get("jacobian") is not None,
                             adapt_movement_scale=self.adapt_movement_scale)
        return self.model(self.source, driving=d if self.pass_driving else None, kp_driving=kp)["prediction"][0]


def animate_per_frame(model: torch.nn.Module, source: Tensor, frames: Iterable[Tensor], relative: bool = True,
                      relative_jacobian: bool = True, adapt_movement_scale: bool = False,
                      pass_driving: bool = False) -> list[Tensor]:
    """:class:`PerFrameAnimator` over ``frames``: one ``(C, H, W)`` prediction per frame."""
    anim = PerFrameAnimator(model, relative, relative_jacobian, adapt_movement_scale, pass_driving)
    anim.set_source(source)
    return [anim.step(f) for f in frames]

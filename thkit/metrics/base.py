"""Streaming evaluation metrics: the shared base classes.

Every metric is fed batches of frames and summarises them at the end::

    m = METRICS.build(dict(type='PSNR'))
    for pred, driving in batches:           # (B, 3, H, W) tensors in ``input_range`` (default [0, 1])
        m.update(pred, driving)             # optional: source=..., video=...
    m.compute()   # {'value': ..., 'mean': ..., 'frames': N, 'skipped': K, 'paper_exact': ..., 'convention': ...}

Conventions shared by all metrics (each subclass documents its own in ``convention``):

* **Input**: ``(B, 3, H, W)`` RGB (a single ``(3, H, W)`` frame is accepted) as float in ``input_range``
  (default ``(0, 1)``), or ``uint8`` in [0, 255].  Values are mapped to [0, 1]; values more than 1 % outside
  the range raise (they usually mean a wrong ``input_range``), small overshoots are clamped.
* ``quantize``: ``None`` (use the floats as they are), ``'round'`` (as if saved to an 8-bit PNG by
  skimage / PIL) or ``'floor'`` (FOMM's ``(255 * x).astype(np.uint8)``).  The field's scripts read PNGs, so
  they see quantised frames; MRFA's L1/PSNR/LPIPS use the float tensors.
* ``eval_size``: when set, frames of another size are resized (bilinear, antialiased) to
  ``eval_size x eval_size`` first; pixel-unit metrics (AKD) are in pixels of this size.  ``None``: as given.
* **Aggregation** (per-frame metrics): one score per frame, then the mean over all frames of all videos
  (``aggregate='frame'``, what every official script does).  With ``video=`` ids given to :meth:`update`,
  ``compute`` also reports the mean of per-video means (``mean_per_video``), and ``aggregate='video'`` makes
  that the headline ``value``.
* **Skipped frames**: frames a detector cannot score (no face found) are left out of the mean and counted in
  ``skipped`` (with the reasons in ``skipped_reasons``), never silently dropped.

The classes are also mmengine metrics (``BaseMetric``): :meth:`process` reads data samples (dicts with
``prediction``, ``driving``, optional ``source`` / ``video``) and :meth:`compute_metrics` returns the numbers.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric

from thkit.interfaces import MetricBase
from thkit.value_range import as_range, from_unit, to_unit

Tensor = torch.Tensor

__all__ = ["Metric", "PerFrameMetric", "Skip", "to_uint8_hwc"]

_QUANTIZE = (None, "round", "floor")


class Skip(str):
    """A per-frame result that could not be scored; the string is the reason (e.g. ``'no_face_pred'``)."""


def to_uint8_hwc(x: Tensor, mode: str | None = "round") -> np.ndarray:
    """``(B, 3, H, W)`` floats in [0, 1] -> ``(B, H, W, 3)`` contiguous ``uint8`` (``mode`` 'round' or 'floor')."""
    y = x.detach().float().clamp(0, 1).mul(255.0)
    y = torch.floor(y) if mode == "floor" else torch.round(y)
    return np.ascontiguousarray(y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())


class Metric(BaseMetric, MetricBase):
    """Base class of thkit metrics (see the module docstring for the conventions).

    Subclasses set ``metric_name``, ``higher_is_better``, ``unit`` and implement :meth:`_update` and
    :meth:`compute_metrics`; they describe their exact definition in :attr:`convention`.

    Args:
        input_range: range of float inputs (``(0, 1)`` or ``(-1, 1)``).
        quantize: ``None``, ``'round'`` or ``'floor'`` (8-bit quantisation before scoring).
        eval_size: resize frames to this square size first (``None``: keep).
        aggregate: ``'frame'`` (mean over all frames) or ``'video'`` (mean of per-video means).
        device: where networks run.
        collect_device, prefix: passed to mmengine's ``BaseMetric``.
    """

    metric_name: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = False
    unit: ClassVar[str] = ""
    #: whether :meth:`update` needs ``target`` (the driving / ground-truth frames)
    needs_target: ClassVar[bool] = True
    backend: str = "math"
    paper_exact: bool = True

    def __init__(self, *, input_range: Sequence[float] = (0.0, 1.0), quantize: str | None = None,
                 eval_size: int | None = None, aggregate: str = "frame", device: str | torch.device = "cpu",
                 collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix or self.metric_name or type(self).__name__)
        lo, hi = as_range(input_range, f"{type(self).__name__}: input_range")
        if quantize not in _QUANTIZE:
            raise ValueError(f"{type(self).__name__}: quantize must be one of {_QUANTIZE}, got {quantize!r}")
        if aggregate not in ("frame", "video"):
            raise ValueError(f"{type(self).__name__}: aggregate must be 'frame' or 'video', got {aggregate!r}")
        if eval_size is not None and int(eval_size) < 8:
            raise ValueError(f"{type(self).__name__}: eval_size must be >= 8 pixels, got {eval_size}")
        self.input_range = (lo, hi)
        self.quantize = quantize
        self.eval_size = None if eval_size is None else int(eval_size)
        self.aggregate = aggregate
        self.device = torch.device(device)

    # ----------------------------------------------------------------------------------------- description
    @property
    def convention(self) -> str:
        """One paragraph stating exactly what is computed (printed in reports)."""
        return ""

    def describe(self) -> dict[str, Any]:
        """Metadata for reports: name, backend, paper_exact, convention, direction and input handling."""
        return {
            "metric": self.metric_name,
            "backend": self.backend,
            "paper_exact": bool(self.paper_exact),
            "higher_is_better": self.higher_is_better,
            "unit": self.unit,
            "convention": self.convention,
            "input_range": list(self.input_range),
            "quantize": self.quantize,
            "eval_size": self.eval_size,
            "aggregate": self.aggregate,
        }

    # ------------------------------------------------------------------------------------------- inputs
    def _frames(self, x: Any, what: str) -> Tensor:
        """Validate and convert one batch to float32 ``(B, 3, H, W)`` in [0, 1] on ``self.device``."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: {what} must be a torch.Tensor (B, 3, H, W), got {type(x).__name__}")
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{name}: {what} must have shape (B, 3, H, W) (RGB), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: {what} is an empty batch")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.detach().float()
            if not torch.isfinite(x).all():
                raise ValueError(f"{name}: {what} contains NaN or infinite values")
            x = to_unit(x, self.input_range)
            mn, mx = float(x.min()), float(x.max())
            if mn < -0.01 or mx > 1.01:
                span = from_unit(torch.tensor([mn, mx], dtype=torch.float64), self.input_range).tolist()
                raise ValueError(
                    f"{name}: {what} values span [{span[0]:.3f}, {span[1]:.3f}], outside "
                    f"input_range={self.input_range}; pass the range your frames use (e.g. input_range=(-1, 1))")
            x = x.clamp(0.0, 1.0)
        else:
            raise TypeError(f"{name}: {what} must be float or uint8, got {x.dtype}")
        x = x.to(self.device)
        if self.eval_size is not None and tuple(x.shape[-2:]) != (self.eval_size, self.eval_size):
            x = F.interpolate(x, size=(self.eval_size, self.eval_size), mode="bilinear", align_corners=False,
                              antialias=True).clamp(0.0, 1.0)
        if self.quantize == "round":
            x = torch.round(x * 255.0) / 255.0
        elif self.quantize == "floor":
            x = torch.floor(x * 255.0) / 255.0
        return x

    def _videos(self, video: Any, n: int) -> list[str | None]:
        if video is None:
            return [None] * n
        if isinstance(video, str):
            return [video] * n
        vids = [None if v is None else str(v) for v in video]
        if len(vids) != n:
            raise ValueError(f"{type(self).__name__}: video= has {len(vids)} ids for a batch of {n} frames")
        return vids

    def update(self, pred: Tensor, target: Tensor | None = None, *, source: Tensor | None = None,
               video: str | Sequence[str] | None = None) -> None:
        """Add one batch.

        Args:
            pred: generated frames ``(B, 3, H, W)``.
            target: the driving / ground-truth frames, same shape (required unless ``needs_target`` is False).
            source: the source (identity) frames, ``(B, 3, H, W)`` or one ``(1, 3, H, W)`` for the whole batch;
                needed by metrics that compare with the source (``reference='source'``).
            video: one id for the batch or one per frame (enables ``mean_per_video``).
        """
        name = type(self).__name__
        p = self._frames(pred, "pred")
        t = None
        if target is not None:
            t = self._frames(target, "target")
            if t.shape != p.shape:
                raise ValueError(f"{name}: target shape {tuple(t.shape)} differs from pred {tuple(p.shape)}")
        elif self.needs_target:
            raise ValueError(f"{name}: update() needs target= (the driving / ground-truth frames)")
        s = None
        if source is not None:
            s = self._frames(source, "source")
            if s.shape[0] == 1 and p.shape[0] > 1:
                s = s.expand(p.shape[0], -1, -1, -1)
            if s.shape[0] != p.shape[0]:
                raise ValueError(f"{name}: source has {s.shape[0]} frames for {p.shape[0]} predictions "
                                 f"(give one per frame, or a single one)")
        with torch.no_grad():
            self._update(p, t, s, self._videos(video, p.shape[0]))

    def _update(self, pred: Tensor, target: Tensor | None, source: Tensor | None,
                videos: list[str | None]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:
        """The summary of everything seen since the last :meth:`reset`: numbers plus :meth:`describe`."""
        out = dict(self.describe())
        out.update(self.compute_metrics(self.results))
        return out

    def reset(self) -> None:
        self.results.clear()

    # ------------------------------------------------------------------------------------ mmengine hooks
    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """mmengine entry point: each data sample is a dict with ``prediction`` and ``driving`` (or
        ``target``), optionally ``source`` and ``video``; tensors are ``(3, H, W)`` or ``(B, 3, H, W)``."""
        for ds in data_samples:
            tgt = ds.get("driving", ds.get("target"))
            self.update(ds["prediction"], tgt, source=ds.get("source"), video=ds.get("video"))


class PerFrameMetric(Metric):
    """A metric with one score per frame.  Subclasses implement :meth:`score_frames`.

    ``reference`` says what the prediction is compared with: ``'target'`` (the driving / ground-truth frame,
    same-identity reconstruction) or ``'source'`` (the identity source, cross-identity evaluation).
    """

    reference_choices: ClassVar[tuple[str, ...]] = ("target",)

    def __init__(self, *, reference: str = "target", **kwargs):
        super().__init__(**kwargs)
        if reference not in self.reference_choices:
            raise ValueError(f"{type(self).__name__}: reference must be one of {self.reference_choices}, got "
                             f"{reference!r}")
        self.reference = reference
        if reference == "source":
            self.needs_target = False

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["reference"] = self.reference
        return d

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float | Skip]:
        """One score per frame (or a :class:`Skip` with the reason)."""
        raise NotImplementedError

    def _update(self, pred, target, source, videos):
        ref = target if self.reference == "target" else source
        if ref is None:
            raise ValueError(f"{type(self).__name__}: reference={self.reference!r} needs "
                             f"{'target' if self.reference == 'target' else 'source'}= in update()")
        scores = self.score_frames(pred, ref)
        if len(scores) != pred.shape[0]:
            raise RuntimeError(f"{type(self).__name__}.score_frames returned {len(scores)} scores for "
                               f"{pred.shape[0]} frames")
        for s, v in zip(scores, videos):
            if isinstance(s, Skip):
                self.results.append({"score": None, "skip": str(s), "video": v})
            else:
                self.results.append({"score": float(s), "skip": None, "video": v})

    def compute_metrics(self, results: list) -> dict[str, Any]:
        scores = np.array([r["score"] for r in results if r["skip"] is None], dtype=np.float64)
        reasons = Counter(r["skip"] for r in results if r["skip"] is not None)
        with np.errstate(invalid="ignore"):  # PSNR of identical frames is inf; its std is then nan
            mean = float(scores.mean()) if scores.size else math.nan
            std = float(scores.std()) if scores.size else math.nan
        out: dict[str, Any] = {
            "mean": mean,
            "std": std,
            "frames": int(scores.size),
            "skipped": int(sum(reasons.values())),
            "skipped_reasons": dict(sorted(reasons.items())),
        }
        per_video: dict[str, list[float]] = defaultdict(list)
        for r in results:
            if r["skip"] is None and r["video"] is not None:
                per_video[r["video"]].append(r["score"])
        if per_video:
            means = [float(np.mean(v)) for v in per_video.values()]
            out["videos"] = len(per_video)
            out["mean_per_video"] = float(np.mean(means))
        if self.aggregate == "video":
            if not per_video:
                raise ValueError(f"{type(self).__name__}: aggregate='video' needs video= ids in update()")
            out["value"] = out["mean_per_video"]
        else:
            out["value"] = mean
        if not scores.size and results:
            warnings.warn(f"{type(self).__name__}: all {len(results)} frames were skipped "
                          f"({dict(reasons)}); the value is NaN", stacklevel=2)
        return out

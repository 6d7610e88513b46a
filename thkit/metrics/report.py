"""Run several metrics together and report them (a rich table on the console, a JSON file).

Typical use by an evaluation command::

    from thkit.metrics.report import MetricCollection, print_report, write_json

    metrics = MetricCollection.from_configs([dict(type='L1'), dict(type='PSNR'), dict(type='SSIM'),
                                             dict(type='AKD', backend='mediapipe', eval_size=256)])
    for batch in loader:
        metrics.update(pred, driving, source=source, video=video_id)
    results = metrics.compute()
    print_report(results)                 # value, direction, frames, skipped, backend, paper-exact, convention
    write_json(results, 'eval.json', meta={'checkpoint': ...})

Metrics whose backend is not the papers' network (``paper_exact`` False) are flagged in both outputs, so a
reader never mistakes an offline stand-in for a number comparable with published tables.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from thkit.metrics.base import Metric
from thkit.registry import METRICS

Tensor = torch.Tensor

__all__ = ["MetricCollection", "results_table", "print_report", "write_json", "to_jsonable"]


class MetricCollection:
    """Named metrics updated together: ``update(pred, target, source=..., video=...)``, ``compute()``."""

    def __init__(self, metrics: Mapping[str, Metric]):
        for name, m in metrics.items():
            if not isinstance(m, Metric):
                raise TypeError(f"MetricCollection: {name!r} is a {type(m).__name__}, not a thkit Metric")
        self.metrics = dict(metrics)

    @classmethod
    def from_configs(cls, cfgs: Sequence[Mapping] | Mapping[str, Mapping], **common: Any) -> MetricCollection:
        """Build from ``[dict(type='PSNR'), ...]`` (named by type, then ``_2``, ...) or ``{name: cfg}``.
        ``common`` keyword arguments (e.g. ``device``, ``eval_size``) are added to every config."""
        items: Iterable[tuple[str | None, Mapping]]
        items = cfgs.items() if isinstance(cfgs, Mapping) else [(None, c) for c in cfgs]
        out: dict[str, Metric] = {}
        for name, cfg in items:
            if "type" not in cfg:
                raise ValueError(f"metric config {dict(cfg)!r} has no 'type' "
                                 f"(registered: {sorted(METRICS.module_dict)})")
            full = {**common, **dict(cfg)}
            m = METRICS.build(full)
            key = name or str(cfg["type"])
            base, i = key, 2
            while key in out:
                key, i = f"{base}_{i}", i + 1
            out[key] = m
        return cls(out)

    def update(self, pred: Tensor, target: Tensor | None = None, *, source: Tensor | None = None,
               video: str | Sequence[str] | None = None) -> None:
        for m in self.metrics.values():
            m.update(pred, target, source=source, video=video)

    def compute(self) -> dict[str, dict[str, Any]]:
        return {name: m.compute() for name, m in self.metrics.items()}

    def reset(self) -> None:
        for m in self.metrics.values():
            m.reset()

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def __len__(self) -> int:
        return len(self.metrics)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return "-" if v is None else str(v)


def results_table(results: Mapping[str, Mapping[str, Any]], title: str = "thkit evaluation"):
    """A :class:`rich.table.Table`: one row per metric, conventions in the caption."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col, kw in (("metric", {}), ("value", {"justify": "right"}), ("better", {"justify": "center"}),
                    ("frames", {"justify": "right"}), ("skipped", {"justify": "right"}), ("reference", {}),
                    ("backend", {}), ("paper-exact", {})):
        table.add_column(col, **kw)
    notes = []
    for name, r in results.items():
        unit = f" {r['unit']}" if r.get("unit") else ""
        skipped = r.get("skipped", 0)
        reasons = r.get("skipped_reasons") or {}
        sk = str(skipped) + (" (" + ", ".join(f"{k}: {v}" for k, v in reasons.items()) + ")" if reasons else "")
        exact = r.get("paper_exact", True)
        table.add_row(
            name, _fmt(r.get("value")) + unit, "higher" if r.get("higher_is_better") else "lower",
            _fmt(r.get("frames")), sk, str(r.get("reference", "target")), str(r.get("backend", "")),
            "yes" if exact else "[bold red]NO[/] (not comparable with papers)")
        if r.get("convention"):
            notes.append(f"{name}: {r['convention']}")
        if "mean_per_video" in r:
            notes.append(f"{name}: mean of per-video means over {r.get('videos')} videos = "
                         f"{_fmt(r['mean_per_video'])} (headline value: {r.get('aggregate', 'frame')} average)")
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def print_report(results: Mapping[str, Mapping[str, Any]], console=None, title: str = "thkit evaluation") -> None:
    """Print :func:`results_table` to ``console`` (a rich Console; default stdout)."""
    from rich.console import Console

    (console or Console()).print(results_table(results, title=title))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN -> null, +-inf -> "inf"/"-inf" strings, tensors / numpy scalars -> numbers."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def write_json(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
               meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``{'meta': ..., 'metrics': results}`` as indented, strictly valid JSON; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": to_jsonable(dict(meta or {})), "metrics": to_jsonable(results)}
    p.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return p

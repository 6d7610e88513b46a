"""Pictures of training: sample grids (source, driving, prediction, warped source, flow, occlusion) and
loss curves.  Pure functions on tensors / records; the hooks in :mod:`thkit.engine.hooks` call them.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from thkit.layers import make_coordinate_grid

Tensor = torch.Tensor


def to_unit(x: Tensor, input_range: Sequence[float]) -> Tensor:
    """Images in ``input_range`` -> [0, 1] (clamped)."""
    lo, hi = float(input_range[0]), float(input_range[1])
    return ((x.detach().float() - lo) / (hi - lo)).clamp(0, 1)


def flow_to_rgb(deformation: Tensor, max_magnitude: float | None = None) -> Tensor:
    """Colour-code a sampling grid ``(B, h, w, 2)`` (``grid_sample`` coordinates) as ``(B, 3, h, w)`` in [0, 1].

    The displacement ``deformation - identity`` is shown with the usual optical-flow colour wheel: hue =
    direction, saturation = magnitude relative to ``max_magnitude`` (default: the largest in the batch).  No
    motion is white.
    """
    if deformation.dim() != 4 or deformation.shape[-1] != 2:
        raise ValueError(f"flow_to_rgb expects a (B, h, w, 2) sampling grid, got {tuple(deformation.shape)}")
    b, h, w, _ = deformation.shape
    ident = make_coordinate_grid(h, w, dtype=deformation.dtype, device=deformation.device)
    disp = (deformation.detach() - ident).float()
    mag = disp.norm(dim=-1)
    scale = float(max_magnitude) if max_magnitude else max(float(mag.max()), 1e-6)
    hue = (torch.atan2(-disp[..., 1], -disp[..., 0]) / (2 * math.pi)) % 1.0
    sat = (mag / scale).clamp(0, 1)
    # HSV (value 1) -> RGB
    k = torch.stack([(5 + hue * 6) % 6, (3 + hue * 6) % 6, (1 + hue * 6) % 6], dim=1)  # (B, 3, h, w)
    rgb = 1 - sat.unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return rgb


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=x.shape[-1] > size[1])


def sample_columns(batch: Mapping[str, Tensor], out: Mapping[str, Any], input_range: Sequence[float]
                   ) -> list[tuple[str, Tensor]]:
    """The columns of a sample grid, each ``(name, (B, 3, H, W) in [0, 1])``: source, driving, prediction,
    deformed (source warped by the flow), flow (colour wheel), occlusion (finest map, grey) when present."""
    size = tuple(batch["driving"].shape[-2:])
    cols = [("source", to_unit(batch["source"], input_range)), ("driving", to_unit(batch["driving"], input_range)),
            ("prediction", to_unit(out["prediction"], input_range))]
    if isinstance(out.get("deformed"), Tensor):
        cols.append(("deformed", _resize(to_unit(out["deformed"], input_range), size)))
    if isinstance(out.get("deformation"), Tensor):
        cols.append(("flow", _resize(flow_to_rgb(out["deformation"]), size)))
    occ = out.get("occlusion_map")
    if isinstance(occ, (list, tuple)):
        occ = occ[-1] if occ else None
    if isinstance(occ, Tensor) and occ.dim() == 4:
        cols.append(("occlusion", _resize(occ.detach().float()[:, :1].clamp(0, 1), size).expand(-1, 3, -1, -1)))
    return cols


def make_grid(columns: Sequence[tuple[str, Tensor]], pad: int = 2, label: bool = True) -> np.ndarray:
    """Lay out columns (one row per sample) as an ``(H, W, 3)`` uint8 image, with a header of column names."""
    imgs = [c for _, c in columns]
    n, _, h, w = imgs[0].shape
    header = 12 if label else 0
    grid = np.full((header + n * (h + pad) + pad, len(imgs) * (w + pad) + pad, 3), 255, np.uint8)
    for j, img in enumerate(imgs):
        arr = (img.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        for i in range(n):
            y, x = header + pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = arr[i]
    if label:
        from PIL import Image, ImageDraw

        im = Image.fromarray(grid)
        draw = ImageDraw.Draw(im)
        for j, (name, _) in enumerate(columns):
            draw.text((pad + j * (w + pad) + 2, 0), name[: max(1, w // 6)], fill=(0, 0, 0))
        grid = np.asarray(im)
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``(H, W, 3)`` uint8 image as PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------------------
# loss curves
# --------------------------------------------------------------------------------------------------------
def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (a torn last line, from a crash mid-write, is ignored)."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 3:
        return y
    window = min(window, len(y))
    kernel = np.ones(window) / window
    pad = np.concatenate([np.full(window - 1, y[0]), y])
    return np.convolve(pad, kernel, mode="valid")


def plot_loss_curves(train: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                     val: Sequence[Mapping[str, Any]] = (), title: str = "training losses") -> Path:
    """One panel per logged quantity (raw in light colour, moving average on top), validation metrics in
    their own panels; written as PNG with matplotlib (Agg).  ``train`` rows are ``{'iter': n, name: value}``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = []
    for row in train:
        for k, v in row.items():
            if (k not in ("iter", "time", "data_time") and not k.endswith("lr") and isinstance(v, (int, float))
                    and k not in keys):
                keys.append(k)
    vkeys = []
    for row in val:
        for k, v in row.items():
            if k != "iter" and isinstance(v, (int, float)) and k not in vkeys:
                vkeys.append(k)
    if any(k.endswith("/value") for k in vkeys):  # thkit metrics: the headline value of each metric
        vkeys = [k for k in vkeys if k.endswith("/value")]
    panels = [("train", k) for k in keys] + [("val", k) for k in vkeys]
    if not panels:
        panels = [("train", "(no records)")]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (kind, key) in zip(axes.flat, panels):
        src = train if kind == "train" else val
        pts = [(r["iter"], r[key]) for r in src if key in r and isinstance(r[key], (int, float))
               and math.isfinite(float(r[key]))]
        if pts:
            x, y = (np.asarray(v, dtype=float) for v in zip(*pts))
            ax.plot(x, y, color="tab:blue" if kind == "train" else "tab:green", alpha=0.3 if kind == "train" else 1,
                    lw=0.8, marker=None if kind == "train" else "o", ms=3)
            if kind == "train" and len(y) > 5:
                ax.plot(x, _smooth(y, max(2, len(y) // 20)), color="tab:blue", lw=1.5)
        ax.set_title(f"{'val ' if kind == 'val' else ''}{key}", fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


__all__ = ["flow_to_rgb", "make_grid", "plot_loss_curves", "read_jsonl", "sample_columns", "save_png", "to_unit"]

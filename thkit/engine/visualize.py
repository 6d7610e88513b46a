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
from torchvision.utils import flow_to_image
from torchvision.utils import make_grid as tv_make_grid

from thkit import value_range
from thkit.layers import make_coordinate_grid

Tensor = torch.Tensor


def to_unit(x: Tensor, input_range: Sequence[float]) -> Tensor:
    """Images in ``input_range`` -> [0, 1] (clamped, float, detached)."""
    return value_range.to_unit(x.detach().float(), input_range).clamp(0, 1)


def flow_to_rgb(deformation: Tensor) -> Tensor:
    """Colour-code a sampling grid ``(B, h, w, 2)`` (``grid_sample`` coordinates) as ``(B, 3, h, w)`` in [0, 1].

    The displacement ``deformation - identity``, in pixels, is drawn by :func:`torchvision.utils.flow_to_image`
    (the Middlebury colour wheel of Baker et al. 2007: hue = direction, saturation = magnitude relative to the
    largest in the batch).  No motion is white.
    """
    if deformation.dim() != 4 or deformation.shape[-1] != 2:
        raise ValueError(f"flow_to_rgb expects a (B, h, w, 2) sampling grid, got {tuple(deformation.shape)}")
    _, h, w, _ = deformation.shape
    ident = make_coordinate_grid(h, w, dtype=deformation.dtype, device=deformation.device)
    disp = (deformation.detach() - ident).float()
    # grid units (-1..1 over w - 1 and h - 1 pixels) -> pixels, so directions are right on non-square maps
    pixels = disp * disp.new_tensor([(w - 1) / 2, (h - 1) / 2])
    return flow_to_image(pixels.permute(0, 3, 1, 2).contiguous()).float() / 255.0


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=x.shape[-1] > size[1])


def sample_columns(batch: Mapping[str, Tensor], out: Mapping[str, Any], input_range: Sequence[float]
                   ) -> list[tuple[str, Tensor]]:
    """The columns of a sample grid, each ``(name, (B, 3, H, W) in [0, 1])``: source, driving (with their keypoints
    drawn when ``out`` has 2D ``kp_source`` / ``kp_driving``, as FOMM's visualiser), prediction, deformed (source
    warped by the flow), flow (colour wheel), occlusion (finest map, grey) when present."""
    size = tuple(batch["driving"].shape[-2:])
    cols = [("source", _with_keypoints(to_unit(batch["source"], input_range), out.get("kp_source"))),
            ("driving", _with_keypoints(to_unit(batch["driving"], input_range), out.get("kp_driving"))),
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


def _with_keypoints(images: Tensor, kp: Any) -> Tensor:
    """``images`` with ``kp['value']`` drawn (:func:`draw_keypoints`) when it is ``(B, K, 2)`` for them, else as is."""
    value = kp.get("value") if isinstance(kp, Mapping) else None
    if not isinstance(value, Tensor) or value.dim() != 3 or value.shape[-1] != 2:
        return images
    if value.shape[0] != images.shape[0]:
        if value.shape[0] != 1:
            return images
        value = value.expand(images.shape[0], -1, -1)
    return draw_keypoints(images, value)


def keypoint_colors(num_kp: int, colormap: str = "gist_rainbow") -> Tensor:
    """``(K, 3)`` colours in [0, 1], one per keypoint index: ``colormap(k / K)`` (FOMM's ``Visualizer``: matplotlib's
    ``gist_rainbow``), so keypoint ``k`` has the same colour in every panel and frame."""
    from matplotlib import colormaps

    cmap = colormaps[colormap]
    return torch.tensor([cmap(k / max(1, num_kp))[:3] for k in range(num_kp)], dtype=torch.float32)


def draw_keypoints(images: Tensor, keypoints: Tensor, radius: float | None = None,
                   colormap: str = "gist_rainbow") -> Tensor:
    """Keypoints drawn as filled coloured dots (colour per keypoint index, :func:`keypoint_colors`) on images.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1] (not modified).
        keypoints: ``(B, K, 2)`` ``(x, y)`` in thkit's convention (-1 and 1 are the centres of the first and last
            pixel: pixel ``(x + 1) / 2 * (W - 1)``).
        radius: dot radius in pixels (default ``max(1.5, H / 50)``; FOMM draws radius 5 at 256).

    Returns a new ``(B, 3, H, W)`` tensor; later keypoints are drawn over earlier ones.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"draw_keypoints expects (B, 3, H, W) images, got {tuple(images.shape)}")
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2 or keypoints.shape[0] != images.shape[0]:
        raise ValueError(f"draw_keypoints expects (B, K, 2) keypoints for {images.shape[0]} images, got "
                         f"{tuple(keypoints.shape)}")
    out = images.detach().float().clone()
    _, _, h, w = out.shape
    r = float(radius) if radius is not None else max(1.5, h / 50)
    kp = keypoints.detach().float().to(out.device)
    px = (kp[..., 0] + 1) / 2 * (w - 1)
    py = (kp[..., 1] + 1) / 2 * (h - 1)
    ys = torch.arange(h, dtype=out.dtype, device=out.device).view(1, h, 1)
    xs = torch.arange(w, dtype=out.dtype, device=out.device).view(1, 1, w)
    colors = keypoint_colors(kp.shape[1], colormap).to(out.device)
    for k in range(kp.shape[1]):
        inside = (xs - px[:, k].view(-1, 1, 1)) ** 2 + (ys - py[:, k].view(-1, 1, 1)) ** 2 <= r * r  # (B, H, W)
        out = torch.where(inside[:, None], colors[k].view(1, 3, 1, 1), out)
    return out


def animation_columns(source: Tensor, driving: Tensor, out: Mapping[str, Any], input_range: Sequence[float],
                      kp_driving: Mapping[str, Tensor] | None = None) -> list[tuple[str, Tensor]]:
    """The panels of FOMM's visualiser for animated frames, each ``(name, (B, 3, H, W) in [0, 1])``: the source
    with its keypoints, the driving frame with its detected keypoints (``kp_driving``; default
    ``out['kp_driving']``), the source warped by the flow (``deformed``), the finest occlusion map (grey; 1 =
    visible) and the result.  Panels whose output the model does not give are left out.

    ``source`` (batch 1 or B) and ``driving`` are model inputs in ``input_range``; ``out`` is the model's
    ``animate`` output (``kp_source``, ``kp_driving``, ``deformed``, ``occlusion_map``, ``prediction``)."""
    drv = to_unit(driving, input_range)
    size = tuple(drv.shape[-2:])
    src = to_unit(source, input_range).expand(drv.shape[0], -1, -1, -1)
    kp_d = kp_driving if kp_driving is not None else out.get("kp_driving")
    cols = [("source", _with_keypoints(src, out.get("kp_source"))), ("driving", _with_keypoints(drv, kp_d))]
    if isinstance(out.get("deformed"), Tensor):
        cols.append(("deformed", _resize(to_unit(out["deformed"], input_range), size)))
    occ = out.get("occlusion_map")
    if isinstance(occ, (list, tuple)):
        occ = occ[-1] if occ else None
    if isinstance(occ, Tensor) and occ.dim() == 4:
        cols.append(("occlusion", _resize(occ.detach().float()[:, :1].clamp(0, 1), size).expand(-1, 3, -1, -1)))
    cols.append(("result", to_unit(out["prediction"], input_range)))
    return cols


LABEL_HEIGHT = 12  # pixels of the header that holds the column names


def make_grid(columns: Sequence[tuple[str, Tensor]], pad: int = 2, label: bool = True) -> np.ndarray:
    """Lay out columns (one row per sample) as an ``(H, W, 3)`` uint8 image on white, with a header of column
    names.  The tiles are placed by :func:`torchvision.utils.make_grid` (``pad`` pixels around each tile); all
    columns must have the same ``(B, C, h, w)`` shape (C = 1 or 3) with values in [0, 1]."""
    imgs = [c.detach().float().cpu() for _, c in columns]
    n = imgs[0].shape[0]
    for (name, _), img in zip(columns, imgs):
        if img.dim() != 4 or img.shape[0] != n or img.shape[-2:] != imgs[0].shape[-2:]:
            raise ValueError(f"make_grid: column {name!r} has shape {tuple(img.shape)}, expected "
                             f"({n}, C, {imgs[0].shape[-2]}, {imgs[0].shape[-1]}) like the first column")
    imgs = [img.expand(-1, 3, -1, -1) if img.shape[1] == 1 else img for img in imgs]
    w = imgs[0].shape[-1]
    # row-major: sample i is row i, column j its j-th picture
    tiles = torch.stack(imgs, dim=1).flatten(0, 1)
    grid = tv_make_grid(tiles, nrow=len(imgs), padding=pad, pad_value=1.0)
    grid = grid.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if label:
        from PIL import Image, ImageDraw

        header = np.full((LABEL_HEIGHT, grid.shape[1], 3), 255, np.uint8)
        im = Image.fromarray(np.concatenate([header, grid], axis=0))
        draw = ImageDraw.Draw(im)
        for j, (name, _) in enumerate(columns):
            draw.text((pad + j * (w + pad) + 2, 0), name[: max(1, w // 6)], fill=(0, 0, 0))
        grid = np.asarray(im)
    return np.ascontiguousarray(grid)


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


__all__ = ["animation_columns", "draw_keypoints", "flow_to_rgb", "keypoint_colors", "make_grid", "plot_loss_curves",
           "read_jsonl", "sample_columns", "save_png", "to_unit"]

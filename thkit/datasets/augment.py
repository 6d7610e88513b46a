"""Augmentation of a (source, driving) pair, applied identically to both frames.

FOMM's ``AllAugmentationTransform`` with the VoxCeleb settings (``augmentation_params``: horizontal flip,
time flip, colour jitter 0.1 on brightness, contrast, saturation and hue) draws one set of parameters per
*video* and applies it to every frame.  Here the two frames are stacked as a batch of 2 and each kornia
augmentation draws its parameters once (``forward_parameters``) and replays them on both frames, so the
pair stays consistent: the motion between the two frames is unchanged, only its appearance and direction.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from thkit.registry import TRANSFORMS

Tensor = torch.Tensor


def _jitter_range(value: float | Sequence[float], name: str):
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"PairAugmentation: jitter {name} must be >= 0, got {value}")
        return float(value)
    return tuple(float(v) for v in value)


@TRANSFORMS.register_module()
class PairAugmentation:
    """Consistent pair augmentation (FOMM sec. 4 / ``augmentation.py`` settings for VoxCeleb).

    Works on a dataset item dict with ``'source'`` and ``'driving'`` (3, H, W) images in [0, 1] and returns
    it augmented:

    * horizontal flip (probability ``flip_p``), the same for both frames; landmarks (``landmarks_*``, keypoint
      coordinates in [-1, 1]) are mirrored, and ``flip_pairs`` (index pairs such as left/right eye) are
      swapped so that their meaning is kept;
    * colour jitter (``torchvision``-style brightness, contrast, saturation, hue factors) with probability
      ``jitter_p``, the same factors on both frames;
    * time flip (probability ``time_flip_p``): source and driving exchange places (with their frame ids and
      ground truth).

    Args:
        flip_p: probability of a horizontal flip.
        time_flip_p: probability of swapping source and driving.
        jitter: dict(brightness=..., contrast=..., saturation=..., hue=...) as in
            :class:`kornia.augmentation.ColorJitter`; None disables colour jitter.
        jitter_p: probability of applying the colour jitter.
        flip_pairs: landmark index pairs exchanged by a horizontal flip.
    """

    def __init__(
        self,
        flip_p: float = 0.5,
        time_flip_p: float = 0.5,
        jitter: dict[str, float | Sequence[float]] | None = None,
        jitter_p: float = 1.0,
        flip_pairs: Sequence[Sequence[int]] | None = None,
    ):
        import kornia.augmentation as K

        for name, p in (("flip_p", flip_p), ("time_flip_p", time_flip_p), ("jitter_p", jitter_p)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"PairAugmentation: {name} must be in [0, 1], got {p}")
        if jitter is None:
            jitter = dict(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1)
        unknown = set(jitter) - {"brightness", "contrast", "saturation", "hue"}
        if unknown:
            raise ValueError(f"PairAugmentation: unknown jitter keys {sorted(unknown)} "
                             "(expected brightness, contrast, saturation, hue)")
        self.flip_p, self.time_flip_p, self.jitter_p = float(flip_p), float(time_flip_p), float(jitter_p)
        self.flip = K.RandomHorizontalFlip(p=self.flip_p, same_on_batch=True)
        self.jitter_cfg = {k: _jitter_range(v, k) for k, v in jitter.items()}
        self.jitter = K.ColorJitter(**self.jitter_cfg, p=self.jitter_p, same_on_batch=True) if any(
            (v if isinstance(v, float) else max(abs(x) for x in v)) for v in self.jitter_cfg.values()) else None
        self.flip_pairs = [tuple(int(i) for i in p) for p in (flip_pairs or [])]

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item = dict(item)
        pair = torch.stack([item["source"], item["driving"]])
        squeeze = pair.dim() == 3  # grey frames without a channel axis
        if squeeze:
            pair = pair.unsqueeze(1)

        params = self.flip.forward_parameters(pair.shape)
        pair = self.flip(pair, params=params)
        flipped = bool(params["batch_prob"][0] > 0.5)
        if self.jitter is not None and pair.shape[1] == 3:
            pair = self.jitter(pair, params=self.jitter.forward_parameters(pair.shape)).clamp(0, 1)
        if squeeze:
            pair = pair.squeeze(1)
        item["source"], item["driving"] = pair[0], pair[1]
        item["augmentation"] = {"hflip": flipped, "time_flip": False}

        if flipped:
            for key in ("landmarks_source", "landmarks_driving"):
                if key in item:
                    item[key] = self._mirror(item[key])
            for key in ("visible_source", "visible_driving"):
                if key in item and self.flip_pairs:
                    item[key] = self._swap(item[key])

        if self.time_flip_p > 0 and float(torch.rand(())) < self.time_flip_p:
            item["augmentation"]["time_flip"] = True
            for a, b in (("source", "driving"), ("landmarks_source", "landmarks_driving"),
                         ("visible_source", "visible_driving")):
                if a in item and b in item:
                    item[a], item[b] = item[b], item[a]
            if "frame_ids" in item:
                item["frame_ids"] = tuple(reversed(tuple(item["frame_ids"])))
        return item

    def _mirror(self, pts: Tensor) -> Tensor:
        pts = pts.clone()
        pts[..., 0] = -pts[..., 0]  # x -> -x in [-1, 1] keypoint coordinates is pixel j -> W - 1 - j
        return self._swap(pts)

    def _swap(self, t: Tensor) -> Tensor:
        if not self.flip_pairs:
            return t
        t = t.clone()
        for a, b in self.flip_pairs:
            t[a], t[b] = t[b].clone(), t[a].clone()
        return t

    def __repr__(self) -> str:
        return (f"PairAugmentation(flip_p={self.flip_p}, time_flip_p={self.time_flip_p}, "
                f"jitter={self.jitter_cfg}, jitter_p={self.jitter_p})")


@TRANSFORMS.register_module()
class ScaleAugmentation:
    """Expression-preserving scale augmentation (OSTNet, Hong & Xu, arXiv 2407.09965, sec. 3): the *driving* frame
    is zoomed by a random factor around the face centre, and the unzoomed frame is kept as the reconstruction
    target, so a model must put the driving expression and pose back at the source's scale.

    On an item dict with ``'driving'`` (C, H, W) in [0, 1]: ``driving_target`` becomes the frame as it was,
    ``driving`` the zoomed frame (bilinear, ``align_corners=True`` keypoint grid, border padding), and
    ``landmarks_driving`` (when present) the zoomed landmarks; ``scale_factor`` holds the factor (1 when the
    augmentation is skipped, with probability ``1 - p``).  A factor above 1 makes the face larger.

    The factor is drawn log-uniformly in ``factor_range`` (so zooming in and out by the same ratio are equally
    likely; our choice).  The centre is the mean of ``landmarks_driving`` when the item has them (a face
    centre), else the image centre.  Recipes that use it read their reconstruction losses' target from
    ``driving_target`` (``inputs=dict(target='driving_target')``).

    Args:
        factor_range: ``(low, high)`` zoom factors, ``0 < low <= high``.
        p: probability of zooming an item.
    """

    def __init__(self, factor_range: Sequence[float] = (0.7, 1.4), p: float = 1.0):
        lo, hi = (float(v) for v in factor_range)
        if not 0 < lo <= hi:
            raise ValueError(f"ScaleAugmentation: factor_range must be (low, high) with 0 < low <= high, got "
                             f"{tuple(factor_range)}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"ScaleAugmentation: p must be in [0, 1], got {p}")
        self.factor_range, self.p = (lo, hi), float(p)

    def draw(self) -> float:
        """One zoom factor (1.0 when the augmentation is skipped)."""
        if self.p < 1 and float(torch.rand(())) >= self.p:
            return 1.0
        lo, hi = math.log(self.factor_range[0]), math.log(self.factor_range[1])
        return math.exp(lo + (hi - lo) * float(torch.rand(())))

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item = dict(item)
        factor = self.draw()
        drv = item["driving"]
        landmarks = item.get("landmarks_driving")
        centre = landmarks.mean(0) if isinstance(landmarks, Tensor) and landmarks.numel() else drv.new_zeros(2)
        item["driving_target"] = drv
        item["driving"] = zoom(drv, factor, centre)
        if isinstance(landmarks, Tensor):
            item["landmarks_driving"] = centre + factor * (landmarks - centre)
        item["scale_factor"] = torch.tensor(factor, dtype=torch.float32)
        return item

    def __repr__(self) -> str:
        return f"ScaleAugmentation(factor_range={self.factor_range}, p={self.p})"


def zoom(image: Tensor, factor: float | Tensor, centre: Tensor) -> Tensor:
    """``image`` (C, H, W) or (B, C, H, W) zoomed by ``factor`` around ``centre`` ((2,) or (B, 2), ``(x, y)`` in
    [-1, 1] keypoint coordinates): the output at ``p`` reads the input at ``centre + (p - centre) / factor``
    (bilinear, ``align_corners=True``, border padding)."""
    import torch.nn.functional as F

    from thkit.layers.grid import make_coordinate_grid

    single = image.dim() == 3
    x = image.unsqueeze(0) if single else image
    b, _, h, w = x.shape
    factor = torch.as_tensor(factor, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    centre = torch.as_tensor(centre, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 2)
    grid = make_coordinate_grid(h, w, dtype=x.dtype, device=x.device).unsqueeze(0)
    grid = (centre + (grid - centre) / factor).expand(b, h, w, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0] if single else out


@TRANSFORMS.register_module()
class AugmentationSequence:
    """Several item augmentations applied in order (e.g. ``PairAugmentation`` then ``ScaleAugmentation``).

    Args:
        steps: augmentation configs (``dict(type=...)``, a registered transform) or callables.
        flip_pairs: landmark index pairs handed to every step config whose transform takes ``flip_pairs`` and does not
            set it (:class:`~thkit.datasets.frames.FramesDataset` passes the ground truth's pairs).
    """

    def __init__(self, steps: Sequence[dict[str, Any] | Any], flip_pairs: Sequence[Sequence[int]] | None = None):
        import inspect

        built = []
        for s in steps:
            if isinstance(s, dict):
                s = dict(s)
                cls = TRANSFORMS.get(s.get("type", "PairAugmentation"))
                if flip_pairs is not None and cls is not None and "flip_pairs" not in s and \
                        "flip_pairs" in inspect.signature(cls).parameters:
                    s["flip_pairs"] = flip_pairs
                s.setdefault("type", "PairAugmentation")
                s = TRANSFORMS.build(s)
            built.append(s)
        self.steps = built
        bad = [type(s).__name__ for s in self.steps if not callable(s)]
        if bad:
            raise ValueError(f"AugmentationSequence: every step must be a config dict or a callable, got {bad}")

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        for step in self.steps:
            item = step(item)
        return item

    def __repr__(self) -> str:
        return f"AugmentationSequence({self.steps!r})"


__all__ = ["AugmentationSequence", "PairAugmentation", "ScaleAugmentation", "zoom"]

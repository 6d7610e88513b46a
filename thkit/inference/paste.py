"""Paste an animated face crop back into the full source image (LivePortrait's ``--flag_pasteback``).

LivePortrait crops the source face, animates the crop, maps the result back with the inverse of the crop
transform and blends it into the original image under a soft mask, so the output keeps the source's resolution
and everything outside the face stays the source.  thkit's face crops are axis-aligned squares
(:func:`thkit.inference.face.crop_box`), so the inverse transform is a resize of the ``size`` x ``size`` result to
the crop's side and a shift to its corner; the mask (:func:`feather_mask`, our own; LivePortrait warps a mask
picture) is 1 inside the crop and falls smoothly to exactly 0 on the crop's outermost pixels, so the seam is
invisible and every pixel on or outside the crop's border is the source's, bit for bit.
"""
from __future__ import annotations

import numpy as np

from thkit.inference.errors import InferenceError

__all__ = ["feather_mask", "paste_back", "Paster"]


def feather_mask(side: int, feather: float = 0.1) -> np.ndarray:
    """``(side, side)`` float32 mask: 0 on the outermost ring of pixels, rising with a smoothstep to 1 at
    ``feather * side`` pixels from the edge (at least 1 pixel), 1 inside."""
    if side < 3:
        raise InferenceError(f"paste-back needs a face crop of at least 3 pixels, got {side}")
    if not 0 < feather <= 0.5:
        raise InferenceError(f"paste-back feather must be in (0, 0.5], got {feather}")
    idx = np.arange(side, dtype=np.float32)
    edge = np.minimum(idx, side - 1 - idx)  # distance (pixels) of each row / column from the nearest border
    d = np.minimum(edge[:, None], edge[None, :])
    t = np.clip(d / max(1.0, feather * side), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 -> ``(side, side, 3)`` float32 (antialiased bilinear, kornia/torch)."""
    import torch
    import torch.nn.functional as F

    if image.shape[0] == side and image.shape[1] == side:
        return image.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=side < image.shape[0])
    return y[0].permute(1, 2, 0).numpy()


class Paster:
    """Paste crops of one source image back into it: ``Paster(source, box)(crop) -> (H, W, 3)`` uint8.

    Args:
        source: the full source image, ``(H, W, 3)`` uint8.
        box: the square crop ``(left, top, side)`` the animated crops come from (inside the image).
        feather: width of the soft edge as a fraction of the side (:func:`feather_mask`).
    """

    def __init__(self, source: np.ndarray, box: tuple[int, int, int], feather: float = 0.1):
        source = np.asarray(source)
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise InferenceError(f"paste-back expects an (H, W, 3) uint8 source, got {source.shape} {source.dtype}")
        left, top, side = (int(v) for v in box)
        h, w = source.shape[:2]
        if left < 0 or top < 0 or left + side > w or top + side > h:
            raise InferenceError(f"paste-back crop (left {left}, top {top}, side {side}) is not inside the "
                                 f"{w}x{h} source")
        self.source = np.ascontiguousarray(source)
        self.box = (left, top, side)
        self.mask = feather_mask(side, feather)[..., None]
        self._region = self.source[top:top + side, left:left + side].astype(np.float32)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        left, top, side = self.box
        face = _resize(np.asarray(crop), side)
        blend = self.mask * face + (1 - self.mask) * self._region
        out = self.source.copy()
        out[top:top + side, left:left + side] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
        return out


def paste_back(source: np.ndarray, crop: np.ndarray, box: tuple[int, int, int], feather: float = 0.1) -> np.ndarray:
    """The animated ``crop`` (any square size, uint8) blended into ``source`` at ``box`` (see :class:`Paster`)."""
    return Paster(source, box, feather)(crop)

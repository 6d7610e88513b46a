"""Relative motion transfer (FOMM sec. 4, "relative motion transfer"; the official ``normalize_kp``).

Animating a source ``S`` with a driving video ``D_1 .. D_T`` uses the *change* of the driving keypoints
since the first frame rather than their absolute position (which would transfer the driving face's shape)::

    value    = kp_S + s * (kp_Dt - kp_D1)                 (relative)
    jacobian = (J_Dt J_D1^-1) J_S                          (relative_jacobian)
    s        = sqrt(area(hull(kp_S))) / sqrt(area(hull(kp_D1)))   (adapt_movement_scale, else 1)

Every other entry of ``kp_driving`` passes through unchanged.  The convex-hull areas are computed with
``scipy.spatial.ConvexHull`` in float64.  By default the scale is computed **per sample** (what a batched
toolkit should do).  ``official_batch0=True`` reproduces the official quirk: the scale of batch element 0,
a Python float, multiplies every element's float32 displacement.
"""
from __future__ import annotations

import math

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["hull_area", "movement_scale", "transfer_motion"]


def hull_area(points: Tensor) -> float:
    """Area of the convex hull of ``points`` (N, 2), in float64 (``scipy.spatial.ConvexHull(...).volume``)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = points.detach().cpu().numpy()
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"hull_area expects (N, 2) points, got shape {tuple(pts.shape)}")
    try:
        return float(ConvexHull(pts).volume)
    except QhullError as e:
        raise ValueError(
            f"cannot compute the convex hull of {pts.shape[0]} keypoints (fewer than 3, or all collinear); "
            f"use adapt_movement_scale=False. Detail: {str(e).splitlines()[0]}") from e


def movement_scale(kp_source: dict[str, Tensor], kp_driving_initial: dict[str, Tensor],
                   official_batch0: bool = False) -> Tensor | float:
    """The adapt-scale factor ``sqrt(area_S) / sqrt(area_D1)``.

    Per sample by default: a ``(B,)`` tensor in the keypoints' dtype (a batch-1 source is broadcast against
    a batch-B first driving frame and vice versa).  With ``official_batch0`` a Python float from batch
    element 0 only (the official behaviour).
    """
    vs, vd = kp_source["value"], kp_driving_initial["value"]
    if official_batch0:
        return float(np.sqrt(hull_area(vs[0])) / np.sqrt(hull_area(vd[0])))
    bs, bd = vs.shape[0], vd.shape[0]
    if bs != bd and 1 not in (bs, bd):
        raise ValueError(f"kp_source has batch {bs} but kp_driving_initial has batch {bd}")
    area_s = [hull_area(v) for v in vs]
    area_d = [hull_area(v) for v in vd]
    n = max(bs, bd)
    scales = [math.sqrt(area_s[i if bs > 1 else 0]) / math.sqrt(area_d[i if bd > 1 else 0]) for i in range(n)]
    return torch.tensor(scales, dtype=torch.float64).to(device=vs.device, dtype=vs.dtype)


def transfer_motion(kp_source: dict[str, Tensor], kp_driving: dict[str, Tensor],
                    kp_driving_initial: dict[str, Tensor] | None = None, relative: bool = True,
                    relative_jacobian: bool = True, adapt_movement_scale: bool = False,
                    official_batch0: bool = False) -> dict[str, Tensor]:
    """Driving keypoints expressed relative to the first driving frame and applied to the source.

    Args:
        kp_source: keypoints of the source image.
        kp_driving: keypoints of the current driving frame.
        kp_driving_initial: keypoints of the first driving frame (needed when ``relative``).
        relative: transfer the displacement ``kp_Dt - kp_D1`` (else the driving keypoints pass as they are).
        relative_jacobian: also transfer ``J_Dt J_D1^-1`` onto ``J_S`` (only with ``relative``).
        adapt_movement_scale: scale displacements by the ratio of the keypoint hulls' sizes.
        official_batch0: take that ratio from batch element 0 for the whole batch (official quirk).

    Returns a new dict with the same keys as ``kp_driving``.
    """
    out = dict(kp_driving)
    if not relative:
        return out
    if kp_driving_initial is None:
        raise ValueError("relative motion transfer needs kp_driving_initial (the first driving frame's keypoints)")
    diff = kp_driving["value"] - kp_driving_initial["value"]
    if adapt_movement_scale:
        scale = movement_scale(kp_source, kp_driving_initial, official_batch0=official_batch0)
        diff = diff * (scale if isinstance(scale, float) else scale.view(-1, 1, 1))
    out["value"] = diff + kp_source["value"]
    if relative_jacobian:
        missing = [n for n, kp in (("kp_source", kp_source), ("kp_driving", kp_driving),
                                   ("kp_driving_initial", kp_driving_initial)) if kp.get("jacobian") is None]
        if missing:
            raise ValueError(f"relative_jacobian needs Jacobians; {', '.join(missing)} has none "
                             f"(use relative_jacobian=False for a detector without Jacobians)")
        change = torch.matmul(kp_driving["jacobian"], torch.inverse(kp_driving_initial["jacobian"]))
        out["jacobian"] = torch.matmul(change, kp_source["jacobian"])
    return out

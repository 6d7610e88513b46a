"""Motion edits realised as a warp of the predicted motion (no method names: any model's motion dict).

A keypoint edit (a pose or expression request) can reach the output in two ways: through the model's dense motion
network (the edited keypoints go in, the network decides the flow), or *as a warp*: the network predicts the motion of
the unedited keypoints, and an output-space map ``E`` then moves the result so that what the unedited output shows at
``edit_to[n]`` appears at ``edit_from[n]``.  A backward flow composes with it by resampling:
``deformation'(p) = deformation(E(p))``, and so does every occlusion map.  ``E`` is the thin-plate spline (the
project's :class:`~thkit.motion.tpsmm.ThinPlateSpline`, no regulariser: it interpolates the correspondences exactly
and reproduces an affine map exactly) with ``E(edit_from[n]) = edit_to[n]``.

A keypoint dict asks for such an edit with two entries beside ``value``: ``edit_from`` and ``edit_to``, ``(B, N, 2)``
in the keypoints' coordinates (``[-1, 1]``, ``align_corners=True`` pixel centres).  The motion network never sees
them (:func:`split_edit`); :meth:`thkit.models.talking_head.TalkingHeadModel.animate` composes the motion with them
(:func:`edit_motion`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = ["EDIT_KEYS", "edit_grid", "edit_motion", "split_edit"]

#: the keypoint-dict entries of a warp-level motion edit: output positions after the edit, and before it
EDIT_KEYS = ("edit_from", "edit_to")


def split_edit(kp: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor] | None]:
    """``kp`` without the edit entries, and ``(edit_from, edit_to)`` (or ``None`` when ``kp`` asks for no edit)."""
    if not any(k in kp for k in EDIT_KEYS):
        return dict(kp), None
    missing = [k for k in EDIT_KEYS if k not in kp]
    if missing:
        raise ValueError(f"a warp-level motion edit needs both {' and '.join(EDIT_KEYS)}; {missing[0]} is missing")
    src, dst = kp["edit_from"], kp["edit_to"]
    if src.shape != dst.shape or src.dim() != 3 or src.shape[-1] != 2 or src.shape[1] < 3:
        raise ValueError(f"edit_from and edit_to must both be (B, N >= 3, 2); got {tuple(src.shape)} and "
                         f"{tuple(dst.shape)}")
    return {k: v for k, v in kp.items() if k not in EDIT_KEYS}, (src, dst)


def edit_grid(edit_from: Tensor, edit_to: Tensor, height: int, width: int) -> Tensor:
    """``E`` on a ``height x width`` grid of output pixel centres: ``(B, height, width, 2)``, the thin-plate spline
    with ``E(edit_from[n]) = edit_to[n]`` (computed in float64)."""
    from thkit.motion.tpsmm import ThinPlateSpline

    tps = ThinPlateSpline(edit_from.double(), edit_to.double(), regularisation=0.0)
    return tps.warp_grid(height, width).to(edit_from.dtype)


def _resample(maps: Tensor, edit_from: Tensor, edit_to: Tensor) -> Tensor:
    grid = edit_grid(edit_from, edit_to, maps.shape[-2], maps.shape[-1]).to(maps.dtype)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)


def edit_motion(motion: Mapping[str, Any], edit_from: Tensor, edit_to: Tensor) -> dict[str, Any]:
    """``motion`` with its ``deformation`` (B, h, w, 2) and ``occlusion_map`` (a map or a list of maps, each at its
    own size) composed with the edit ``E`` (module docstring); other entries (the motion network's own
    diagnostics, of the unedited keypoints) pass through."""
    out = dict(motion)
    deformation = motion["deformation"]
    out["deformation"] = _resample(deformation.permute(0, 3, 1, 2), edit_from, edit_to).permute(0, 2, 3, 1)
    occ = motion.get("occlusion_map")
    if isinstance(occ, Tensor):
        out["occlusion_map"] = _resample(occ, edit_from, edit_to)
    elif occ:
        out["occlusion_map"] = [_resample(o, edit_from, edit_to) for o in occ]
    return out

"""Face-prior keypoint parts: pose alignment before relative motion transfer, and pose / expression control.

After "Controllable One-Shot Face Video Synthesis With Semantic Aware Prior" (Liu et al., arXiv 2304.14471; abstract
only, no public code).  The construction (template fit, rotation about the head centre with template depths, Umeyama
alignment) is thkit's own and is described in :mod:`thkit.transfer_control`, which holds the geometry.  These parts
map keypoints to keypoints; they are registered with the ``motion`` kind only because no keypoint-transfer kind exists
(as TPSMM's AVD network), and recipes name them in ``pose_alignment`` and ``control``, never as ``model.motion``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from thkit.errors import ThkitError
from thkit.interfaces import MotionEstimator
from thkit.registry import MOTION_ESTIMATORS
from thkit.transfer_control import (
    POSE_ANGLES,
    ControlError,
    fit_pose,
    fit_similarity,
    rotate_keypoints,
    rotation_from_euler,
)

Tensor = torch.Tensor

__all__ = ["FacePriorControl", "PoseAlignment", "SimilarityAlignment"]

#: how a pose / expression edit reaches the output (:class:`FacePriorControl`'s ``realise``)
REALISE = ("keypoints", "warp")


# --------------------------------------------------------------------------------------------------------
def _template(template: Sequence[Sequence[float]]) -> Tensor:
    t = torch.as_tensor(template, dtype=torch.float32)
    if t.dim() != 2 or t.shape[1] != 3 or t.shape[0] < 4:
        raise ThkitError(f"a face template must be at least 4 points (x, y, z), got shape {tuple(t.shape)}")
    return t


@MOTION_ESTIMATORS.register_module()
class SimilarityAlignment(MotionEstimator):
    """Pose alignment for any keypoint model: the source's keypoints moved by the similarity (rotation in the
    image plane, scale, translation) that fits them best onto the first driving frame's (Umeyama least squares).

    ``forward(kp_source, kp_driving_initial) -> kp_source aligned`` (values and Jacobians: ``J' = s Q J``).  It
    removes in-plane misalignment (roll, position, size), not yaw or pitch (:class:`PoseAlignment` does, with a face
    prior).  Registered with the motion estimators only because no keypoint-transfer kind exists; a recipe names it
    in ``pose_alignment``, never as ``model.motion``.  Our construction (Liu et al. 2023 only name pose alignment).
    """

    contract_outputs = ("value",)

    def forward(self, kp_source: dict[str, Tensor], kp_driving_initial: dict[str, Tensor]) -> dict[str, Tensor]:
        s, q, t = fit_similarity(kp_source["value"], kp_driving_initial["value"])
        out = dict(kp_source)
        value = kp_source["value"].expand(s.shape[0], *kp_source["value"].shape[1:])
        out["value"] = s[:, None, None] * torch.einsum("bij,bkj->bki", q, value) + t[:, None]
        if kp_source.get("jacobian") is not None:
            jac = kp_source["jacobian"].expand(s.shape[0], *kp_source["jacobian"].shape[1:])
            out["jacobian"] = s[:, None, None, None] * torch.einsum("bij,bkjl->bkil", q, jac)
        return out


@MOTION_ESTIMATORS.register_module()
class PoseAlignment(MotionEstimator):
    """Pose alignment with a face prior: the source's keypoints rotated in 3-D from the source's head pose to the
    first driving frame's, rescaled and moved to its head centre (module docstring of :mod:`thkit.transfer_control`).

    Both poses are :func:`fit_pose` fits of the recipe's face template to the keypoints (keypoint ``k`` tied to
    template point ``k`` by the geometry loss).  ``kp_S' = t_D + (s_D / s_S) (R_D R_S^T (kp_S - t_S, z_S))_xy``;
    what the template does not explain (the source's identity shape and expression) is kept.  Registered with the
    motion estimators only because no keypoint-transfer kind exists (a recipe's ``pose_alignment``).

    Args:
        template: (K, 3) template point of each keypoint, head units (x right, y down, z to the camera).
        weights: optional per-keypoint weights of the pose fits.
        iters: Gauss-Newton steps of each fit.
    """

    contract_outputs = ("value",)

    def __init__(self, template: Sequence[Sequence[float]], weights: Sequence[float] | None = None, iters: int = 15):
        super().__init__()
        self.register_buffer("template", _template(template), persistent=False)
        self.register_buffer("fit_weights", None if weights is None else torch.as_tensor(weights, dtype=torch.float32),
                             persistent=False)
        self.iters = int(iters)

    def forward(self, kp_source: dict[str, Tensor], kp_driving_initial: dict[str, Tensor]) -> dict[str, Tensor]:
        vs, vd = kp_source["value"], kp_driving_initial["value"]
        if vs.shape[1] != self.template.shape[0]:
            raise ThkitError(f"PoseAlignment: the face template has {self.template.shape[0]} points but the model "
                             f"gives {vs.shape[1]} keypoints")
        ps = fit_pose(vs, self.template, self.fit_weights, self.iters)
        pd = fit_pose(vd, self.template, self.fit_weights, self.iters)
        n = max(vs.shape[0], vd.shape[0])
        ps = {k: v.expand(n, *v.shape[1:]) for k, v in ps.items()}
        kp = {k: v.expand(n, *v.shape[1:]) for k, v in kp_source.items()}
        edit = pd["rotation"].to(vs.dtype) @ ps["rotation"].transpose(1, 2)
        return rotate_keypoints(kp, ps, edit, self.template, scale=pd["scale"] / ps["scale"],
                                translation=pd["translation"].expand(n, 2))


@MOTION_ESTIMATORS.register_module()
class FacePriorControl(MotionEstimator):
    """Pose and expression edits of keypoints tied to a face template (the "convenient interface" of Liu et al.
    2023, arXiv 2304.14471; the construction is ours, module docstring of :mod:`thkit.transfer_control`).

    ``forward(kp, pose=None, expression=None)``: ``pose`` maps yaw / pitch / roll to degrees added to the head pose
    fitted to ``kp`` (a rotation about the head centre with template-estimated depths); ``expression`` maps a name
    of ``expressions`` to a coefficient (its template displacements, posed, added).  Requests outside ``pose_range``
    or an expression's ``range`` raise :class:`ControlError`.  Registered with the motion estimators only because no
    keypoint-transfer kind exists (a recipe's ``control``).

    Args:
        template: (K, 3) template point of each keypoint, head units (x right, y down, z to the camera).
        pose_range: largest ``|angle|`` in degrees per angle that the model was trained for.
        expressions: ``{name: dict(basis=(K, 3) head-unit displacements per unit, range=(lo, hi))}``.
        iters: Gauss-Newton steps of the pose fit.
        pose_gain: per angle, the fraction of a keypoint rotation that the trained model turns its output head by
            (a *measured* property of trained weights, e.g. ``benchmarks/semantic_prior.py``'s calibration; default
            1: the keypoints are rotated by the requested angle).  A request of ``Y`` degrees rotates the keypoints
            by ``Y / gain`` so that the output turns by ``Y``; that keypoint rotation must stay within
            ``pose_range`` (the poses the model was trained for), or the request is refused in one line.
        realise: how the edit reaches the output.  ``'keypoints'``: the edited keypoints drive the model's dense
            motion network (the output turns as far as the trained network follows keypoints).  ``'warp'``: the
            network animates the unedited keypoints and the edit is a thin-plate-spline warp of its motion
            (:mod:`thkit.warp.edit`) that carries each keypoint to its edited place, each point of the head
            ``outline`` to where the same rotation takes it, and keeps the image border still.
        outline: ``warp`` only: the head's outline in template units, ``dict(radii=(a, b), points=n)``: ``n``
            points of the ellipse ``(a cos t, b sin t)`` around the fitted head centre at depth 0 (the silhouette of
            a head facing the camera), posed with the fitted scale and moved by the pose edit.  Without it (``None``)
            only the keypoints pin the warp and a yaw mostly shifts the whole head.
    """

    contract_outputs = ("value",)

    def __init__(self, template: Sequence[Sequence[float]], pose_range: Mapping[str, float] | None = None,
                 expressions: Mapping[str, Mapping[str, Any]] | None = None, iters: int = 15,
                 pose_gain: Mapping[str, float] | None = None, realise: str = "keypoints",
                 outline: Mapping[str, Any] | None = None):
        super().__init__()
        if realise not in REALISE:
            raise ThkitError(f"control.realise={realise!r}: expected one of {', '.join(REALISE)}")
        self.realise = realise
        self.outline = None
        if outline is not None:
            radii = tuple(float(r) for r in outline.get("radii", (0.75, 1.0)))
            n = int(outline.get("points", 16))
            if len(radii) != 2 or min(radii) <= 0 or n < 4:
                raise ThkitError(f"control.outline: expected dict(radii=(a, b) > 0, points=n >= 4), got "
                                 f"radii={radii}, points={n}")
            t = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
            self.outline = torch.stack([radii[0] * t.cos(), radii[1] * t.sin(), torch.zeros_like(t)], -1)
        self.register_buffer("template", _template(template), persistent=False)
        k = self.template.shape[0]
        self.pose_range = {a: float((pose_range or {}).get(a, 0.0)) for a in POSE_ANGLES}
        unknown = sorted(set(pose_range or {}) - set(POSE_ANGLES))
        if unknown:
            raise ThkitError(f"control.pose_range: unknown angle {unknown[0]!r} (angles: yaw, pitch, roll)")
        self.expressions: dict[str, tuple[Tensor, tuple[float, float]]] = {}
        for name, spec in (expressions or {}).items():
            basis = torch.as_tensor(spec["basis"], dtype=torch.float32)
            if basis.shape != (k, 3):
                raise ThkitError(f"control.expressions.{name}.basis must be ({k}, 3), got {tuple(basis.shape)}")
            lo, hi = (float(v) for v in spec.get("range", (-1.0, 1.0)))
            self.expressions[str(name)] = (basis, (lo, hi))
        self.iters = int(iters)
        unknown = sorted(set(pose_gain or {}) - set(POSE_ANGLES))
        if unknown:
            raise ThkitError(f"control.pose_gain: unknown angle {unknown[0]!r} (angles: yaw, pitch, roll)")
        self.pose_gain = {a: float((pose_gain or {}).get(a, 1.0)) for a in POSE_ANGLES}
        for a, g in self.pose_gain.items():
            if not (math.isfinite(g) and 0.05 <= g <= 20.0):
                raise ThkitError(f"control.pose_gain.{a}={g:g}: expected the measured fraction of a keypoint rotation "
                                 "the model realises, between 0.05 and 20 (1: uncalibrated)")

    def keypoint_angles(self, pose: Mapping[str, float] | None) -> dict[str, float]:
        """The keypoint rotation (degrees per angle) that makes the output turn by ``pose``: ``pose / pose_gain``."""
        return {a: float((pose or {}).get(a, 0.0)) / self.pose_gain[a] for a in POSE_ANGLES}

    def check(self, pose: Mapping[str, float] | None = None, expression: Mapping[str, float] | None = None) -> None:
        """Raise :class:`ControlError` (one line) for a request this model cannot honour."""
        for name, val in (pose or {}).items():
            if name not in POSE_ANGLES:
                raise ControlError(f"--pose: unknown angle {name!r}; use yaw, pitch and roll (degrees)")
            lim, gain = self.pose_range[name], self.pose_gain[name]
            if not math.isfinite(float(val)) or abs(float(val)) > lim:
                raise ControlError(f"--pose {name}={float(val):g}: outside the range this model was trained for "
                                   f"(|{name}| <= {lim:g} degrees, the recipe's control.pose_range)")
            if abs(float(val)) / gain > lim:
                raise ControlError(f"--pose {name}={float(val):g}: this model turns its output by {gain:g} of a "
                                   f"keypoint rotation (control.pose_gain), so it needs {float(val) / gain:.1f} "
                                   f"degrees of keypoint rotation, outside the range it was trained for "
                                   f"(|{name}| <= {lim:g}); the largest request is {lim * gain:.1f}")
        for name, val in (expression or {}).items():
            if name not in self.expressions:
                have = ", ".join(self.expressions) or "none"
                raise ControlError(f"--expression: unknown expression {name!r} (this recipe has: {have})")
            lo, hi = self.expressions[name][1]
            if not math.isfinite(float(val)) or not lo <= float(val) <= hi:
                raise ControlError(f"--expression {name}={float(val):g}: outside the range this model allows "
                                   f"([{lo:g}, {hi:g}], the recipe's control.expressions.{name}.range)")

    def forward(self, kp: dict[str, Tensor], pose: Mapping[str, float] | None = None,
                expression: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        self.check(pose, expression)
        angles = self.keypoint_angles(pose)
        coefs = {n: float(c) for n, c in (expression or {}).items() if float(c) != 0.0}
        if not any(angles.values()) and not coefs:
            return dict(kp)  # nothing requested: the keypoints as they are
        value = kp["value"]
        if value.shape[1] != self.template.shape[0]:
            raise ControlError(f"the face template has {self.template.shape[0]} points but the model gives "
                               f"{value.shape[1]} keypoints")
        fit = fit_pose(value, self.template, iters=self.iters)
        out = dict(kp)
        edit = None
        if coefs:
            disp = sum(c * self.expressions[n][0].to(value) for n, c in coefs.items())  # (K, 3) head units
            posed = torch.einsum("bij,kj->bki", fit["rotation"].to(value), disp)[..., :2]
            out["value"] = value + fit["scale"].to(value)[:, None, None] * posed
        if any(angles.values()):
            # the edit adds to the fitted Euler angles: R' = R(yaw + dy, pitch + dp, roll + dr), E = R' R^T
            delta = torch.tensor([angles[a] for a in POSE_ANGLES], dtype=torch.float64)
            target = torch.deg2rad(fit["angles"].to(torch.float64) + delta)
            rot_new = rotation_from_euler(target[:, 0], target[:, 1], target[:, 2])
            edit = rot_new @ fit["rotation"].to(torch.float64).transpose(1, 2)
            out = rotate_keypoints(out, fit, edit.to(value), self.template)
        if self.realise == "keypoints":
            return out
        return self._as_warp(kp, out, fit, edit)

    def _as_warp(self, kp: dict[str, Tensor], edited: dict[str, Tensor], fit: dict[str, Tensor],
                 edit: Tensor | None) -> dict[str, Tensor]:
        """``kp`` unedited, with the edit as warp correspondences (``edit_from`` / ``edit_to``): the keypoints, the
        head outline (moved by the pose ``edit``, a (B, 3, 3) rotation about the head centre, if any) and the image
        border (still: eight points of the ``[-1, 1]`` square)."""
        value = kp["value"]
        src, dst = [edited["value"]], [value]
        if self.outline is not None:
            ring = fit["scale"].to(torch.float64)[:, None, None] * self.outline.to(value.device)  # (B, M, 3)
            centre = fit["translation"].to(torch.float64)[:, None]
            moved = ring if edit is None else torch.einsum("bij,bmj->bmi", edit, ring)
            src.append((centre + moved[..., :2]).to(value))
            dst.append((centre + ring[..., :2]).to(value))
        border = value.new_tensor([[-1, -1], [0, -1], [1, -1], [1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0]])
        border = border.expand(value.shape[0], -1, -1)
        src.append(border)
        dst.append(border)
        out = dict(kp)
        out["edit_from"], out["edit_to"] = torch.cat(src, 1), torch.cat(dst, 1)
        return out

"""Face-prior motion control: pose alignment before relative transfer, and pose / expression edits of 2-D keypoints.

After "Controllable One-Shot Face Video Synthesis With Semantic Aware Prior" (Liu et al., arXiv 2304.14471).  Only
the paper's abstract is public (no code): keypoint-warping methods degrade when the source and the first driving
frame are misaligned in pose, and a face prior gives "a convenient interface" for pose and expression control.
Everything below is thkit's own construction from that description (``docs/methods/semantic_prior.md``):

**Face prior.**  A recipe's ``face_prior`` ties keypoint ``k`` to a point ``X_k`` of a 3-D face template (head
units: x right, y down, z towards the camera, origin at the head's centre; the geometry loss
:class:`thkit.losses.geometry.FaceGeometryLoss` pulls keypoint ``k`` onto the landmark(s) of that point).

**Pose of a set of keypoints** (:func:`fit_pose`): the orthographic (scaled) camera of the template that fits the
keypoints best, ``p_k ~ s (R X_k)_xy + t`` (weighted least squares: an affine fit projected onto a scaled rotation,
then Gauss-Newton steps on ``(R, s, t)``).  ``R = Rz(roll) Ry(yaw) Rx(pitch)``: the convention of thkit's synthetic
head renderer, so angles compare with its ground truth.

**A pose edit acts on 2-D keypoints** (:func:`rotate_keypoints`) as a rotation of 3-D points about the head centre
``t``: keypoint ``k`` gets the depth ``z_k = s (R X_k)_z`` that the fitted template gives it (an *estimated* depth:
the template's, posed like the face), ``q_k = (p_k - t, z_k)`` is rotated by ``E = R' R^T`` in camera coordinates,
where ``R'`` has the fitted Euler angles plus the request's (``yaw=10`` turns the head 10 degrees further in the
renderer's yaw), and projected orthographically: ``p'_k = t + (E q_k)_xy``.  What the template does not explain
(identity shape, expression) is kept in ``q_k``.  Local Jacobians follow as the face's local plane (normal
``n = R e_z``) moves: ``J' = E[:2] [I; -n_xy / n_z] J``.

**Expression edits** add named displacements of the template points (head units per unit of the coefficient),
posed with the fitted ``s R``: ``p'_k = p_k + c s (R D_k)_xy``.

**Pose alignment** (:class:`~thkit.motion.face_prior.PoseAlignment`,
:class:`~thkit.motion.face_prior.SimilarityAlignment`): relative motion transfer
``kp = kp_S + (kp_Dt - kp_D1)`` keeps the source's pose offset from the first driving frame.  Aligning the source's
keypoints to that frame first (``kp_S -> A(kp_S)`` with ``A`` the pose or similarity change ``S -> D1``) makes the
transfer start from an aligned reference, so the output follows the driving pose.  Both (and the control,
:class:`~thkit.motion.face_prior.FacePriorControl`) live in :mod:`thkit.motion.face_prior`, registered with the
``motion`` kind (as TPSMM's AVD network: no keypoint-transfer kind exists) and run on any keypoint model; the pose
version needs a face prior (keypoints tied to template points), the similarity version (rotation in the image plane,
scale, translation; Umeyama's least squares) needs nothing.

:class:`MotionControl` is what animation uses (``thkit.inference.stream.MotionTransfer``'s ``control``): the
alignment, once per driving video, and the edit, per frame.  :func:`build_motion_control` makes one from a recipe
and a user's request (``--pose yaw=10``, ``--expression mouth_open=0.5``, ``--align``), and rejects a request outside
the recipe's ``control.pose_range`` / expression ranges with one line.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from thkit.errors import ThkitError

Tensor = torch.Tensor

__all__ = ["POSE_ANGLES", "ControlError", "MotionControl", "build_motion_control", "euler_from_rotation", "fit_pose",
           "fit_similarity", "parse_assignments", "rotate_keypoints", "rotation_from_euler"]

POSE_ANGLES = ("yaw", "pitch", "roll")


class ControlError(ThkitError):
    """A pose / expression request that the model cannot honour (one line for the user)."""


# --------------------------------------------------------------------------------------------------------
# rotations and pose fitting
# --------------------------------------------------------------------------------------------------------
def rotation_from_euler(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """``(..., 3, 3)`` rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` from angles in radians (x right, y down, z to
    the camera; the synthetic head renderer's convention)."""
    yaw, pitch, roll = torch.broadcast_tensors(torch.as_tensor(yaw), torch.as_tensor(pitch), torch.as_tensor(roll))
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    shape = (*yaw.shape, 3, 3)
    rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).view(shape)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).view(shape)
    rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).view(shape)
    return rz @ ry @ rx


def euler_from_rotation(rot: Tensor) -> Tensor:
    """``(..., 3)`` angles (yaw, pitch, roll) in **degrees** of ``Rz(roll) Ry(yaw) Rx(pitch)`` rotations."""
    yaw = torch.asin((-rot[..., 2, 0]).clamp(-1, 1))
    pitch = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    roll = torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], -1))


def _skew(v: Tensor) -> Tensor:
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).view(*v.shape[:-1], 3, 3)


def _so3_exp(w: Tensor) -> Tensor:
    """Rodrigues: ``(..., 3)`` axis-angle -> ``(..., 3, 3)``."""
    theta = w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = _skew(w / theta)
    th = theta[..., None]
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + th.sin() * k + (1 - th.cos()) * (k @ k)


def _weights(points: Tensor, weights: Tensor | None) -> Tensor:
    b, k = points.shape[:2]
    w = torch.ones(b, k, dtype=points.dtype, device=points.device) if weights is None else weights.to(points)
    if w.dim() == 1:
        w = w.expand(b, k)
    return w / w.sum(1, keepdim=True).clamp_min(1e-12)


def fit_pose(points: Tensor, template: Tensor, weights: Tensor | None = None, iters: int = 15) -> dict[str, Tensor]:
    """The scaled orthographic pose of ``template`` (K, 3) that fits ``points`` (B, K, 2) best.

    Minimises ``sum_k w_k |s (R X_k)_xy + t - p_k|^2`` over a rotation ``R``, a scale ``s > 0`` and a translation
    ``t``: an affine least-squares fit, projected onto the nearest scaled rotation (SVD), then ``iters``
    Levenberg-damped Gauss-Newton steps (rotation updated on the left by ``exp([w]x)``).  Computed in float64.
    Returns ``{'rotation': (B, 3, 3), 'scale': (B,), 'translation': (B, 2), 'angles': (B, 3) degrees}``.
    """
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ThkitError(f"fit_pose: points must be (B, K, 2), got {tuple(points.shape)}")
    tmpl = torch.as_tensor(template, dtype=torch.float64, device=points.device)
    if tmpl.shape != (points.shape[1], 3):
        raise ThkitError(f"fit_pose: the template has {tuple(tmpl.shape)} points for {points.shape[1]} keypoints "
                         "(expected one 3-D template point per keypoint)")
    p = points.detach().to(torch.float64)
    w = _weights(p, weights).to(torch.float64)
    b = p.shape[0]
    xm = (w[..., None] * tmpl).sum(1)  # (B, 3)
    pm = (w[..., None] * p).sum(1)  # (B, 2)
    xc, pc = tmpl - xm[:, None], p - pm[:, None]
    # affine fit M (2x3): pc ~ xc M^T
    a = torch.einsum("bk,bki,bkj->bij", w, xc, xc) + 1e-9 * torch.eye(3, dtype=p.dtype, device=p.device)
    c = torch.einsum("bk,bki,bkj->bij", w, pc, xc)  # (B, 2, 3)
    m = c @ torch.linalg.inv(a)
    u, sv, vh = torch.linalg.svd(m, full_matrices=False)  # (B,2,2), (B,2), (B,2,3)
    r12 = u @ vh
    r3 = torch.cross(r12[:, 0], r12[:, 1], dim=-1)
    rot = torch.cat([r12, r3[:, None]], 1)
    s = sv.mean(-1).clamp_min(1e-9)
    t = pm - s[:, None] * (rot @ xm[..., None])[..., :2, 0]
    sw = w.sqrt()
    lam = 1e-6
    for _ in range(int(iters)):
        y = torch.einsum("bij,kj->bki", rot, tmpl)  # (B, K, 3)
        r = s[:, None, None] * y[..., :2] + t[:, None] - p  # (B, K, 2)
        jw = -s[:, None, None, None] * _skew(y)[..., :2, :]  # d r / d w (left perturbation): (B, K, 2, 3)
        js = y[..., :2, None]  # (B, K, 2, 1)
        jt = torch.eye(2, dtype=p.dtype, device=p.device).expand(b, p.shape[1], 2, 2)
        jac = torch.cat([jw, js, jt], -1) * sw[..., None, None]  # (B, K, 2, 6)
        jac = jac.reshape(b, -1, 6)
        res = (r * sw[..., None]).reshape(b, -1)
        h = jac.transpose(1, 2) @ jac
        h = h + lam * torch.diag_embed(torch.diagonal(h, dim1=1, dim2=2) + 1e-12)
        delta = torch.linalg.solve(h, -(jac.transpose(1, 2) @ res[..., None]))[..., 0]
        rot = _so3_exp(delta[:, :3]) @ rot
        s = (s + delta[:, 3]).clamp_min(1e-9)
        t = t + delta[:, 4:]
    out_dtype = points.dtype if points.is_floating_point() else torch.float32
    return {"rotation": rot.to(out_dtype), "scale": s.to(out_dtype), "translation": t.to(out_dtype),
            "angles": euler_from_rotation(rot).to(out_dtype)}


def fit_similarity(src: Tensor, dst: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity ``dst ~ s Q src + t`` of point sets (B, K, 2) (Umeyama 1991, rotation without
    reflection): returns ``(s (B,), Q (B, 2, 2), t (B, 2))``."""
    s64, d64 = src.detach().to(torch.float64), dst.detach().to(torch.float64)
    if s64.shape[0] != d64.shape[0]:
        s64, d64 = torch.broadcast_tensors(s64, d64)
    w = _weights(s64, weights).to(torch.float64)
    ms, md = (w[..., None] * s64).sum(1), (w[..., None] * d64).sum(1)
    xs, xd = s64 - ms[:, None], d64 - md[:, None]
    cov = torch.einsum("bk,bki,bkj->bij", w, xd, xs)
    u, sv, vh = torch.linalg.svd(cov)
    sign = torch.ones_like(sv)
    sign[:, 1] = torch.sign(torch.linalg.det(u @ vh))
    q = u @ torch.diag_embed(sign) @ vh
    var = (w * (xs**2).sum(-1)).sum(1).clamp_min(1e-12)
    scale = (sv * sign).sum(-1) / var
    t = md - scale[:, None] * (q @ ms[..., None])[..., 0]
    dt = src.dtype
    return scale.to(dt), q.to(dt), t.to(dt)


def _plane_lift(normal: Tensor) -> Tensor:
    """``(B, 3, 2)``: image displacement -> 3-D displacement on the plane with camera-frame ``normal`` (B, 3)."""
    nz = normal[:, 2].clamp_min(0.05)  # a face seen nearly edge-on: keep the lift finite
    eye = torch.eye(2, dtype=normal.dtype, device=normal.device).expand(normal.shape[0], 2, 2)
    return torch.cat([eye, (-normal[:, :2] / nz[:, None])[:, None]], 1)


def rotate_keypoints(kp: Mapping[str, Tensor], pose: Mapping[str, Tensor], edit: Tensor, template: Tensor,
                     scale: Tensor | None = None, translation: Tensor | None = None) -> dict[str, Tensor]:
    """Keypoints ``kp`` (fitted ``pose``, :func:`fit_pose`) rotated by ``edit`` (B or 1, 3, 3) about the head centre
    (module docstring); optionally rescaled by ``scale`` (B,) and moved to the head centre ``translation`` (B, 2).

    Other entries of ``kp`` pass through; ``jacobian`` is mapped by the edit's local linear map.
    """
    value = kp["value"]
    dt = value.dtype
    rot, s, t = pose["rotation"].to(dt), pose["scale"].to(dt), pose["translation"].to(dt)
    edit = edit.to(dt).expand(value.shape[0], 3, 3)
    tmpl = torch.as_tensor(template, dtype=dt, device=value.device)
    depth = s[:, None] * torch.einsum("bj,kj->bk", rot[:, 2], tmpl)  # (B, K): z of each keypoint, template-posed
    q = torch.cat([value - t[:, None], depth[..., None]], -1)  # (B, K, 3)
    moved = torch.einsum("bij,bkj->bki", edit, q)[..., :2]
    k = 1.0 if scale is None else scale.to(dt)[:, None, None]
    centre = t if translation is None else translation.to(dt)
    out = dict(kp)
    out["value"] = centre[:, None] + k * moved
    if kp.get("jacobian") is not None:
        lin = edit[:, :2] @ _plane_lift(rot[:, :, 2])  # (B, 2, 2)
        if scale is not None:
            lin = lin * scale.to(dt)[:, None, None]
        out["jacobian"] = torch.einsum("bij,bkjl->bkil", lin, kp["jacobian"])
    return out


# --------------------------------------------------------------------------------------------------------
# what animation uses
# --------------------------------------------------------------------------------------------------------
class MotionControl:
    """Alignment (once per driving video) and edit (per frame) of the transferred keypoints.

    ``align(kp_source, kp_initial)``: the source keypoints relative transfer starts from (aligned to the first
    driving frame, or as they are); ``edit(kp)``: the keypoints to animate with (pose / expression edited).
    """

    def __init__(self, alignment: torch.nn.Module | None = None, control: torch.nn.Module | None = None,
                 pose: Mapping[str, float] | None = None, expression: Mapping[str, float] | None = None):
        self.alignment = alignment
        self.control = control
        self.pose = dict(pose or {})
        self.expression = dict(expression or {})
        if control is not None:
            control.check(self.pose, self.expression)

    @property
    def warps_motion(self) -> bool:
        """Whether :meth:`edit` asks the model to warp its motion (``edit_from`` / ``edit_to``,
        :mod:`thkit.warp.edit`) rather than giving it edited keypoints."""
        return bool(self.pose or self.expression) and getattr(self.control, "realise", "keypoints") == "warp"

    @torch.no_grad()
    def align(self, kp_source: dict[str, Tensor], kp_initial: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.alignment is None:
            return kp_source
        return self.alignment(kp_source, kp_initial)

    @torch.no_grad()
    def edit(self, kp: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.control is None:
            return kp
        return self.control(kp, self.pose, self.expression)

    def describe(self) -> str:
        parts = []
        if self.alignment is not None:
            parts.append(f"pose alignment ({type(self.alignment).__name__})")
        if self.pose:
            parts.append("pose " + ",".join(f"{k}={v:g}" for k, v in self.pose.items()))
        if self.expression:
            parts.append("expression " + ",".join(f"{k}={v:g}" for k, v in self.expression.items()))
        return "; ".join(parts)


def parse_assignments(text: str | Mapping[str, float] | None, what: str) -> dict[str, float]:
    """``'yaw=10,pitch=-5'`` (or a mapping) -> ``{'yaw': 10.0, 'pitch': -5.0}``; a malformed item is one line."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = []
        for part in str(text).replace(" ", "").split(","):
            if not part:
                continue
            name, eq, val = part.partition("=")
            if not eq or not name:
                raise ControlError(f"{what} {text!r}: expected NAME=VALUE[,NAME=VALUE...], e.g. "
                                   f"{'yaw=10,pitch=0' if what == '--pose' else 'mouth_open=0.5'}")
            items.append((name, val))
    out = {}
    for name, val in items:
        try:
            out[str(name)] = float(val)
        except (TypeError, ValueError):
            raise ControlError(f"{what} {name}={val!r}: the value must be a number") from None
    return out


def build_motion_control(cfg: Mapping[str, Any] | None, pose: str | Mapping[str, float] | None = None,
                         expression: str | Mapping[str, float] | None = None,
                         align: bool | None = None) -> MotionControl | None:
    """The :class:`MotionControl` of a recipe and a request, or ``None`` when nothing is asked.

    ``align``: ``None`` = the recipe's ``pose_alignment`` (if any); ``True`` = it, or :class:`SimilarityAlignment`
    for a recipe without one (any keypoint model); ``False`` = none.  ``pose`` / ``expression`` need the recipe's
    ``control`` (a :class:`FacePriorControl` config); without one they are refused in one line.
    """
    from thkit.builder import build

    cfg = cfg or {}
    pose_d = parse_assignments(pose, "--pose")
    expr_d = parse_assignments(expression, "--expression")
    alignment = None
    if align is not False:
        spec = cfg.get("pose_alignment")
        if spec is None and align:
            spec = dict(type="SimilarityAlignment")
        if spec is not None:
            alignment = build("motion", dict(spec), path="pose_alignment")
    control = None
    if pose_d or expr_d:
        spec = cfg.get("control")
        if spec is None:
            flag = "--pose" if pose_d else "--expression"
            raise ControlError(f"{flag}: this recipe defines no face-prior control (its 'control' entry); use a "
                               "recipe with semantic keypoints, e.g. semantic_prior/small")
        control = build("motion", dict(spec), path="control")
    if alignment is None and control is None:
        return None
    return MotionControl(alignment, control, pose_d, expr_d)

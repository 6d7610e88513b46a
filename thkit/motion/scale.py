"""Online scale transformation (OSTNet, Hong & Xu, "Learning Online Scale Transformation for Talking Head Video
Generation", arXiv 2407.09965, sec. 3 and fig. 2), as parts any motion estimator can be put behind.

OSTNet has no public code; what is the paper's and what is our assumption is listed in ``docs/methods/ostnet.md``.

* :class:`ScaleTransformation` (kind ``rectifier``): the scale transformation module ``T_theta``.  From the
  source and driving keypoints and their spread (distance vectors ``x_k - mean(x)``) it predicts the scale code
  ``z`` and, from ``z``, the **fiducial points** of a thin-plate-spline transformation (the spatial transformer
  of RARE, Shi et al., CVPR 2016, sec. 3.1): ``N`` base points along two opposite image borders in the
  rectified frame and where each lies in the driving frame.
* :class:`ThinPlateRectification`: the TPS grid generator + sampler (RARE sec. 3.1.2-3.1.3) built from those
  point pairs, which warps the driving image into the scale-rectified driving image, and moves keypoints and
  their Jacobians the same way (so they need not be detected again on the rectified image).
* :class:`ScaleRectifiedMotion` (kind ``motion``): a wrapper that puts a rectifier in front of ANY motion
  estimator: it rectifies the driving keypoints (and the driving image when it is given), runs the wrapped
  estimator on them (``M_{S <- D^}``), and exposes ``scale_code`` in its output for a decoder's
  ``conditioning`` (:class:`~thkit.layers.conditioning.ScaleCodeInjection`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.builder import build
from thkit.interfaces import MotionEstimator, Part, loss_inputs, prepare_source
from thkit.layers import make_coordinate_grid
from thkit.motion.tpsmm import ThinPlateSpline
from thkit.registry import MOTION_ESTIMATORS, RECTIFIERS

Tensor = torch.Tensor

__all__ = [
    "Rectifier",
    "ScaleRectifiedMotion",
    "ScaleTransformation",
    "ThinPlateRectification",
    "border_fiducials",
    "keypoint_spread",
]


class Rectifier(Part):
    """``forward(kp_source, kp_driving) -> {'code': (B, D), 'control': (B, N, 2), 'fiducials': (B, N, 2)}``.

    ``control`` are points of the rectified frame, ``fiducials`` where each of them lies in the driving frame
    (``(x, y)`` in ``[-1, 1]``, the keypoint convention); ``code`` is the per-frame code a decoder may be
    conditioned on.  :class:`ThinPlateRectification` turns the two point sets into the warp.
    """

    contract_attrs = ("forward",)
    contract_outputs = ("code", "control", "fiducials")


def border_fiducials(num: int, margin: float = 0.0, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    """RARE's base fiducial points (Shi et al. 2016, sec. 3.1.1, fig. 3): ``num / 2`` points evenly spaced along
    the top border and as many along the bottom border of the ``[-1, 1]`` frame, inset by ``margin``.
    Returns ``(num, 2)`` ``(x, y)``."""
    if num < 4 or num % 2:
        raise ValueError(f"num_fiducials must be an even number >= 4 (two borders of >= 2 points), got {num}")
    edge = 1.0 - float(margin)
    xs = torch.linspace(-edge, edge, num // 2, dtype=dtype, device=device)
    top = torch.stack([xs, torch.full_like(xs, -edge)], -1)
    bottom = torch.stack([xs, torch.full_like(xs, edge)], -1)
    return torch.cat([top, bottom], 0)


def keypoint_spread(points: Tensor, eps: float = 1e-6) -> Tensor:
    """Root-mean-square distance of ``(B, K, 2)`` points from their mean: ``(B,)`` (a scale measure)."""
    centred = points - points.mean(dim=1, keepdim=True)
    return (centred.pow(2).sum(-1).mean(-1) + eps).sqrt()


class ThinPlateRectification:
    """The thin-plate-spline grid generator and sampler of RARE (sec. 3.1.2-3.1.3) for a batch of point pairs.

    ``control`` (B, N, 2) are points of the rectified image, ``fiducials`` (B, N, 2) the matching points of the
    driving image.  The sampling grid maps each rectified pixel to where it is read in the driving image
    (``T: control -> fiducials``, the spline through the pairs); keypoints of the driving image move the other
    way (``T^-1: fiducials -> control``, the spline through the same pairs swapped; exact when the pairs differ
    by an affine map, as a zoom).  Both are :class:`~thkit.motion.tpsmm.ThinPlateSpline` interpolants
    (``regularisation`` 0: the plain RARE system; a TPS reproduces an affine map exactly).

    Why not :func:`kornia.geometry.transform.warp_image_tps`: kornia centres its kernels on the *destination*
    points (a non-standard TPS); the project's spline centres them on the control points as RARE does, and gives
    the sampling grid itself (needed for the keypoints' Jacobians and exposed to callers).  ``tests/test_ostnet.py``
    checks both against an analytic zoom.
    """

    def __init__(self, control: Tensor, fiducials: Tensor, regularisation: float = 0.0):
        self.control, self.fiducials = control, fiducials
        self.forward_tps = ThinPlateSpline(control, fiducials, regularisation)
        self.inverse_tps = ThinPlateSpline(fiducials, control, regularisation)

    def sampling_grid(self, height: int, width: int) -> Tensor:
        """``(B, height, width, 2)``: for each rectified pixel, where to sample the driving image (grid_sample
        coordinates, ``align_corners=True`` as the keypoint grid)."""
        grid = make_coordinate_grid(height, width, dtype=self.control.dtype, device=self.control.device)
        out = self.forward_tps.warp_points(grid.reshape(1, -1, 2))
        return out.reshape(out.shape[0], height, width, 2)

    def warp_image(self, image: Tensor, padding_mode: str = "border") -> Tensor:
        """The rectified image (RARE's sampler: bilinear ``grid_sample`` of ``image`` on :meth:`sampling_grid`)."""
        grid = self.sampling_grid(image.shape[2], image.shape[3])
        if grid.shape[0] != image.shape[0]:
            grid = grid.expand(image.shape[0], *grid.shape[1:])
        return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding_mode,
                             align_corners=True)

    def warp_points(self, points: Tensor) -> Tensor:
        """Driving-frame points ``(B, M, 2)`` -> where they lie in the rectified frame."""
        return self.inverse_tps.warp_points(points)

    def point_jacobians(self, points: Tensor) -> Tensor:
        """``d T^-1 / d x`` at each point, ``(B, M, 2, 2)``, row ``i`` = output coordinate (analytic: the affine
        block plus ``sum_n w_n U'(r_n^2) 2 (x - p_n)`` with ``U(s) = s log(s + 1e-9)``)."""
        tps = self.inverse_tps
        diff = points.unsqueeze(-2) - tps.control.unsqueeze(-3)  # (B, M, N, 2)
        sq = diff.pow(2).sum(-1)
        du = torch.log(sq + 1e-9) + sq / (sq + 1e-9)  # U'(s)
        kernel = torch.einsum("bmn,bmnk,bnj->bmjk", 2 * du, diff, tps.weights)
        return tps.affine[..., :2, :].transpose(-1, -2).unsqueeze(-3) + kernel

    def warp_keypoints(self, kp: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A keypoint dict of the driving frame as keypoints of the rectified frame: values through ``T^-1`` and,
        when present, Jacobians (FOMM's local affines) composed with ``T^-1``'s derivative."""
        value = kp["value"]
        out = {k: v for k, v in kp.items()}
        out["value"] = self.warp_points(value)
        if kp.get("jacobian") is not None:
            out["jacobian"] = torch.matmul(self.point_jacobians(value), kp["jacobian"])
        return out


@RECTIFIERS.register_module()
class ScaleTransformation(Rectifier):
    """OSTNet's scale transformation module ``T_theta`` (sec. 3, fig. 2): keypoints -> scale code ``z`` -> fiducials.

    Input per frame (source ``S`` and driving ``D``, the same detector's ``K`` keypoints): the keypoints
    ``x_k``, the distance vectors ``d_k = x_k - mean(x)`` (the scale/topology descriptor the paper names) and, our
    addition, the log spreads ``log s_S, log s_D`` and their difference (``s`` = RMS of ``|d_k|``,
    :func:`keypoint_spread`).  An MLP (``hidden`` units, LeakyReLU 0.2) gives ``z`` (``code_dim``); a linear head
    gives the offsets of the ``num_fiducials`` fiducial points from RARE's base points on the top and bottom
    borders (:func:`border_fiducials`).  The head starts at zero: the module starts as the identity warp.

    Returns ``code`` (= ``z``, (B, code_dim)), ``control`` (B, N, 2: the base points, the rectified frame),
    ``fiducials`` (B, N, 2: where they are in the driving frame).

    Args:
        num_kp: keypoints per frame (the detector's ``num_kp``).
        code_dim: width of the scale code ``z``.
        hidden: width of the MLP's hidden layers.
        num_fiducials: fiducial points (RARE: 20, two rows of 10).
        margin: inset of the base points from the borders.
        detach_keypoints: stop the gradient into the keypoint detector through this module.
    """

    def __init__(self, num_kp: int = 10, code_dim: int = 64, hidden: int = 256, num_fiducials: int = 20,
                 margin: float = 0.0, detach_keypoints: bool = False):
        super().__init__()
        if num_kp < 2:
            raise ValueError(f"ScaleTransformation needs num_kp >= 2 (a spread), got {num_kp}")
        self.num_kp, self.code_dim, self.num_fiducials = int(num_kp), int(code_dim), int(num_fiducials)
        self.detach_keypoints = bool(detach_keypoints)
        self.register_buffer("base", border_fiducials(self.num_fiducials, margin), persistent=False)
        in_dim = 8 * self.num_kp + 3
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                     nn.LeakyReLU(0.2), nn.Linear(hidden, self.code_dim))
        self.fiducial_head = nn.Linear(self.code_dim, 2 * self.num_fiducials)
        nn.init.zeros_(self.fiducial_head.weight)
        nn.init.zeros_(self.fiducial_head.bias)

    def extra_repr(self) -> str:
        return f"num_kp={self.num_kp}, code_dim={self.code_dim}, num_fiducials={self.num_fiducials}"

    def descriptor(self, kp_source: Mapping[str, Tensor], kp_driving: Mapping[str, Tensor]) -> Tensor:
        """The input vector ``(B, 8 K + 3)``: both frames' keypoints and distance vectors, and the log spreads."""
        xs, xd = kp_source["value"], kp_driving["value"]
        for name, x in (("kp_source", xs), ("kp_driving", xd)):
            if x.dim() != 3 or x.shape[1:] != (self.num_kp, 2):
                raise ValueError(f"ScaleTransformation expects {name}['value'] as (B, {self.num_kp}, 2), got "
                                 f"{tuple(x.shape)}")
        if xs.shape[0] != xd.shape[0]:
            xs = xs.expand(xd.shape[0], -1, -1)
        if self.detach_keypoints:
            xs, xd = xs.detach(), xd.detach()
        b = xd.shape[0]
        ls, ld = keypoint_spread(xs).log(), keypoint_spread(xd).log()
        parts = [xs, xs - xs.mean(1, keepdim=True), xd, xd - xd.mean(1, keepdim=True)]
        return torch.cat([p.reshape(b, -1) for p in parts] + [torch.stack([ls, ld, ls - ld], -1)], dim=1)

    def forward(self, kp_source: Mapping[str, Tensor], kp_driving: Mapping[str, Tensor]) -> dict[str, Tensor]:
        z = self.encoder(self.descriptor(kp_source, kp_driving))
        b = z.shape[0]
        control = self.base.to(z.dtype).expand(b, -1, -1)
        fiducials = control + self.fiducial_head(z).view(b, self.num_fiducials, 2)
        return {"code": z, "control": control, "fiducials": fiducials}


@MOTION_ESTIMATORS.register_module()
class ScaleRectifiedMotion(MotionEstimator):
    """Any motion estimator behind a rectifier (OSTNet fig. 2: ``T_theta`` -> TPS warp of ``I_D`` -> dense motion).

    ``forward(source, kp_source, kp_driving, driving=None)``: the rectifier maps the two keypoint sets to a code and
    a thin-plate-spline warp (:class:`ThinPlateRectification`); the driving keypoints (values and Jacobians) are
    moved into the rectified frame by that warp (OSTNet detects them again on the rectified image; moving them is
    our generic replacement, which needs no detector inside the motion part), the driving image, when given, is
    warped into the rectified driving image; the wrapped estimator then runs on ``(source, kp_source, rectified
    kp_driving, rectified driving)``.  The model therefore generates the driving expression and pose at the
    source's scale.

    Returns the wrapped estimator's dict plus ``scale_code`` (B, D), ``fiducials`` and ``control`` (B, N, 2),
    ``kp_driving_rectified`` and, with a driving image, ``rectified_driving`` (B, C, H, W).

    Args:
        motion: the wrapped ``motion`` part.
        rectifier: the ``rectifier`` part (e.g. ``ScaleTransformation``).
        padding_mode: ``grid_sample`` padding of the rectified driving image.
        regularisation: ``lambda`` of the thin-plate-spline systems (0 = RARE's interpolating spline).
    """

    def __init__(self, motion: dict, rectifier: dict, padding_mode: str = "border", regularisation: float = 0.0):
        super().__init__()
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
        self.rectifier = build("rectifier", rectifier, "rectifier")
        self.motion = build("motion", motion, "motion")
        self.padding_mode = padding_mode
        self.regularisation = float(regularisation)

    @property
    def num_kp(self) -> int | None:
        return getattr(self.motion, "num_kp", None)

    def prepare_source(self, source: Tensor, kp_source: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """The wrapped estimator's source-only inputs (the source is not rectified)."""
        return prepare_source(self.motion, source, kp_source)

    def loss_inputs(self) -> dict[str, Any]:
        """What the wrapped estimator offers the losses."""
        return loss_inputs(self.motion)

    def rectify(self, kp_source: Mapping[str, Tensor], kp_driving: Mapping[str, Tensor],
                driving: Tensor | None = None) -> dict[str, Any]:
        """The rectifier's output, the warp, the rectified keypoints and (with ``driving``) the rectified image.

        The spline systems are solved in float32 outside autocast (a bf16 solve is too coarse to invert)."""
        rect = dict(self.rectifier(kp_source, kp_driving))
        device = rect["fiducials"].device.type
        with torch.autocast(device_type=device, enabled=False):
            fid = rect["fiducials"].float()
            warp = ThinPlateRectification(rect["control"].float(), fid, self.regularisation)
            rect["warp"] = warp
            kp = {k: (v.float() if k in ("value", "jacobian") else v) for k, v in kp_driving.items()}
            rect["kp_driving_rectified"] = warp.warp_keypoints(kp)
            if driving is not None:
                rect["rectified_driving"] = warp.warp_image(driving.float(), self.padding_mode).to(driving.dtype)
        return rect

    def forward(self, source: Tensor, kp_source: Mapping[str, Tensor], kp_driving: Mapping[str, Tensor],
                driving: Tensor | None = None, source_cache: dict[str, Tensor] | None = None) -> dict[str, Any]:
        rect = self.rectify(kp_source, kp_driving, driving)
        kwargs = {} if source_cache is None else {"source_cache": source_cache}
        out = dict(self.motion(source, kp_source, rect["kp_driving_rectified"], driving=rect.get("rectified_driving"),
                               **kwargs))
        out.update(scale_code=rect["code"], fiducials=rect["fiducials"], control=rect["control"],
                   kp_driving_rectified=rect["kp_driving_rectified"])
        if "rectified_driving" in rect:
            out["rectified_driving"] = rect["rectified_driving"]
        return out

"""Equivariance constraint on the keypoint detector (FOMM sec. 3.3, "equivariance constraints"; TPSMM sec.
3.3; MRFA; SMAC).

A random smooth transform ``T`` (a perturbed identity affine plus a thin-plate spline on a 5x5 control grid)
warps the driving frame: ``X' = X o T`` (``grid_sample`` at ``T(z)``).  A detector that follows the image
gives keypoints ``p'`` on ``X'`` with ``T(p') = p`` (the keypoints on ``X``) and, for its local Jacobians,
``J = J_T(p') J'``.  The two penalties are

    L_value    = mean |p - T(p')|                                (keypoint values)
    L_jacobian = mean |I - J^-1 (J_T(p') J')|                     (Jacobians; J is the driving one)

TPSMM has no Jacobians (``jacobian_weight=0``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thkit.layers import make_coordinate_grid
from thkit.losses._base import Loss
from thkit.registry import LOSSES

Tensor = torch.Tensor

_KERNELS = ("fomm", "tpsmm")


class RandomTPSTransform:
    """A batch of random transforms ``T(z) = A z + t + sum_n c_n U(z - p_n) [1, 1]^T`` (FOMM's ``Transform``).

    ``A | t`` is the identity plus N(0, sigma_affine^2) noise; ``p_n`` is a ``points x points`` grid over
    [-1, 1]^2 and ``c_n`` ~ N(0, sigma_tps^2).  As in the official code one scalar spline is added to *both*
    coordinates.  The radial basis differs between the official codes (``tps_kernel``):

    * ``'fomm'`` (FOMM, SMAC, MRFA, MCNet): L1 radius ``r = |dx| + |dy|``, ``U = r^2 log(r + 1e-6)``;
    * ``'tpsmm'`` (TPSMM): ``r^2 = dx^2 + dy^2``, ``U = r^2 log(r^2 + 1e-9)``.

    kornia's thin-plate splines use ``r^2 log r`` with fitted coefficients, so they cannot reproduce either
    random family; the warp itself is ``grid_sample``.

    Args:
        theta: ``(B, 2, 3)`` affine part.
        control_params: ``(B, N)`` spline coefficients, or ``None`` for an affine-only transform.
        points_tps: side of the control grid (``N = points_tps ** 2``).
        tps_kernel: ``'fomm'`` or ``'tpsmm'``.
    """

    def __init__(self, theta: Tensor, control_params: Tensor | None = None, points_tps: int = 5,
                 tps_kernel: str = "fomm"):
        if theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
            raise ValueError(f"theta must be (B, 2, 3), got {tuple(theta.shape)}")
        if tps_kernel not in _KERNELS:
            raise ValueError(f"tps_kernel must be one of {_KERNELS}, got {tps_kernel!r}")
        self.theta = theta
        self.tps_kernel = tps_kernel
        self.control_params = None
        self.control_points = None
        if control_params is not None:
            if tuple(control_params.shape) != (theta.shape[0], points_tps**2):
                raise ValueError(f"control_params must be (B, {points_tps ** 2}), got {tuple(control_params.shape)}")
            self.control_params = control_params.to(theta)
            self.control_points = make_coordinate_grid(points_tps, points_tps, dtype=theta.dtype,
                                                       device=theta.device).reshape(-1, 2)

    @classmethod
    def sample(cls, batch: int, sigma_affine: float = 0.05, sigma_tps: float | None = 0.005,
               points_tps: int | None = 5, tps_kernel: str = "fomm", generator: torch.Generator | None = None,
               device=None, dtype=torch.float32) -> RandomTPSTransform:
        """Draw a batch of transforms.  The draws are made on the CPU in the official order (``theta`` noise
        first, then the spline coefficients, both with ``torch.normal``), so a seeded global RNG gives the
        same transform as the official ``Transform``."""
        noise = torch.normal(0.0, sigma_affine * torch.ones(batch, 2, 3), generator=generator)
        theta = noise + torch.eye(2, 3).view(1, 2, 3)
        params = None
        if sigma_tps is not None and points_tps is not None:
            params = torch.normal(0.0, sigma_tps * torch.ones(batch, 1, points_tps**2), generator=generator)
            params = params.view(batch, -1)
        theta = theta.to(device=device, dtype=dtype)
        params = None if params is None else params.to(device=device, dtype=dtype)
        return cls(theta, params, points_tps or 5, tps_kernel)

    @classmethod
    def identity(cls, batch: int, device=None, dtype=torch.float32) -> RandomTPSTransform:
        return cls(torch.eye(2, 3, device=device, dtype=dtype).expand(batch, 2, 3).clone())

    @property
    def batch(self) -> int:
        return self.theta.shape[0]

    def _radial(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Spline value ``f(z)`` (B, M) and its gradient ``df/dz`` (B, M, 2) for points ``z`` (B, M, 2)."""
        d = z.unsqueeze(-2) - self.control_points  # (B, M, N, 2)
        c = self.control_params[:, None, :]  # (B, 1, N)
        if self.tps_kernel == "fomm":
            r = d.abs().sum(-1)
            log = torch.log(r + 1e-6)
            u = r**2 * log
            du_dr = 2 * r * log + r**2 / (r + 1e-6)
            grad = (c * du_dr).unsqueeze(-1) * torch.sign(d)
        else:
            r2 = (d**2).sum(-1)
            log = torch.log(r2 + 1e-9)
            u = r2 * log
            du_dr2 = log + r2 / (r2 + 1e-9)
            grad = (c * du_dr2).unsqueeze(-1) * 2 * d
        return (c * u).sum(-1), grad.sum(-2)

    def _points(self, z: Tensor) -> Tensor:
        if z.dim() == 2:
            z = z.unsqueeze(0).expand(self.batch, *z.shape)
        if z.dim() != 3 or z.shape[-1] != 2 or z.shape[0] != self.batch:
            raise ValueError(f"points must be (M, 2) or ({self.batch}, M, 2), got {tuple(z.shape)}")
        return z.to(self.theta.dtype)

    def warp_points(self, z: Tensor) -> Tensor:
        """``T(z)`` for ``z`` of shape (M, 2) or (B, M, 2) -> (B, M, 2)."""
        z = self._points(z)
        out = z @ self.theta[:, :, :2].transpose(1, 2) + self.theta[:, None, :, 2]
        if self.control_params is not None:
            f, _ = self._radial(z)
            out = out + f.unsqueeze(-1)
        return out

    def jacobian(self, z: Tensor) -> Tensor:
        """``dT/dz`` at ``z`` (closed form; differentiable in ``z``) -> (B, M, 2, 2), rows = output coords."""
        z = self._points(z)
        jac = self.theta[:, None, :, :2].expand(z.shape[0], z.shape[1], 2, 2)
        if self.control_params is not None:
            _, g = self._radial(z)
            jac = jac + g.unsqueeze(-2)  # the same spline is added to x and to y
        return jac

    def warp_image(self, image: Tensor, align_corners: bool = True, padding_mode: str = "reflection") -> Tensor:
        """``X o T``: sample ``image`` at ``T(z)`` for every pixel ``z`` of its own grid."""
        b, _, h, w = image.shape
        if b != self.batch:
            raise ValueError(f"transform batch {self.batch} does not match image batch {b}")
        grid = make_coordinate_grid(h, w, dtype=self.theta.dtype, device=self.theta.device).reshape(-1, 2)
        grid = self.warp_points(grid).view(b, h, w, 2).to(image.dtype)
        return F.grid_sample(image, grid, padding_mode=padding_mode, align_corners=align_corners)


@LOSSES.register_module()
class EquivarianceLoss(Loss):
    """Keypoint equivariance loss (FOMM sec. 3.3): a dict ``{'value': ..., 'jacobian': ...}``.

    ``forward(driving, kp_driving, keypoint_detector, transform=None)`` draws a :class:`RandomTPSTransform`
    (unless one is given), runs ``keypoint_detector`` on the transformed driving frame and compares.  The
    training model calls it with its own detector (so the gradient reaches it through both detections).
    Inputs: ``driving``, ``kp_driving``, ``keypoint_detector`` from the namespace of the same names.

    Args:
        weight: overall factor on both terms.
        value_weight: weight of the value term (FOMM/TPSMM/MRFA 10, SMAC 1).
        jacobian_weight: weight of the Jacobian term (FOMM/MRFA 10, SMAC 1, TPSMM 0 = no Jacobian term).
        sigma_affine, sigma_tps, points_tps: the transform (all methods: 0.05, 0.005, 5).
        tps_kernel: ``'fomm'`` or ``'tpsmm'`` radial basis, see :class:`RandomTPSTransform`.
        align_corners: ``grid_sample`` convention of the frame warp (TPSMM ``True``; FOMM's code passes
            nothing, i.e. ``True`` under the torch 1.0 it was trained with and ``False`` on today's torch; SMAC
            (torch 1.12), MCNet and DaGAN pass nothing on torch >= 1.3: ``False``, their paper recipes' official
            value).  The frame grid puts -1 / +1 on the corner pixels' centres, so only ``True`` (thkit's
            correction, an opt-in there) makes the identity transform an identity warp; ``False`` samples half
            a pixel outside at each border (a slight zoom-out) on top of every transform.
        padding_mode: ``'reflection'`` (official).
    """

    default_inputs = {"driving": "driving", "kp_driving": "kp_driving", "keypoint_detector": "keypoint_detector"}

    def __init__(self, weight: float = 1.0, value_weight: float = 10.0, jacobian_weight: float = 10.0,
                 sigma_affine: float = 0.05, sigma_tps: float | None = 0.005, points_tps: int | None = 5,
                 tps_kernel: str = "fomm", align_corners: bool = True, padding_mode: str = "reflection"):
        super().__init__(weight)
        if tps_kernel not in _KERNELS:
            raise ValueError(f"tps_kernel must be one of {_KERNELS}, got {tps_kernel!r}")
        self.value_weight = float(value_weight)
        self.jacobian_weight = float(jacobian_weight)
        self.sigma_affine = float(sigma_affine)
        self.sigma_tps = None if sigma_tps is None else float(sigma_tps)
        self.points_tps = None if points_tps is None else int(points_tps)
        self.tps_kernel = tps_kernel
        self.align_corners = bool(align_corners)
        self.padding_mode = padding_mode
        #: optional ``torch.Generator`` (CPU) for the transform draws; ``None`` uses the global RNG
        self.generator: torch.Generator | None = None

    def extra_repr(self) -> str:
        return (f"weight={self.weight:g}, value_weight={self.value_weight:g}, "
                f"jacobian_weight={self.jacobian_weight:g}, tps_kernel={self.tps_kernel!r}")

    def sample_transform(self, batch: int, device=None, dtype=torch.float32) -> RandomTPSTransform:
        return RandomTPSTransform.sample(batch, self.sigma_affine, self.sigma_tps, self.points_tps,
                                         self.tps_kernel, generator=self.generator, device=device, dtype=dtype)

    def forward(self, driving: Tensor, kp_driving: dict[str, Tensor], keypoint_detector: nn.Module,
                transform: RandomTPSTransform | None = None) -> dict[str, Tensor]:
        if "value" not in kp_driving:
            raise ValueError("EquivarianceLoss: kp_driving needs a 'value' entry (B, K, 2)")
        if transform is None:
            transform = self.sample_transform(driving.shape[0], device=driving.device, dtype=driving.dtype)
        transformed = transform.warp_image(driving, self.align_corners, self.padding_mode)
        kp_t = keypoint_detector(transformed)
        out: dict[str, Tensor] = {}
        if self.value_weight != 0:
            back = transform.warp_points(kp_t["value"])
            out["value"] = self.weight * self.value_weight * (kp_driving["value"] - back).abs().mean()
        if self.jacobian_weight != 0:
            if "jacobian" not in kp_driving or "jacobian" not in kp_t:
                raise ValueError("EquivarianceLoss: jacobian_weight is non-zero but the keypoint detector returns no "
                                 "'jacobian' (set jacobian_weight=0 for detectors without Jacobians, e.g. TPSMM)")
            jac_t = transform.jacobian(kp_t["value"]) @ kp_t["jacobian"]
            rel = torch.linalg.inv(kp_driving["jacobian"]) @ jac_t
            eye = torch.eye(2, dtype=rel.dtype, device=rel.device)
            out["jacobian"] = self.weight * self.jacobian_weight * (eye - rel).abs().mean()
        return out

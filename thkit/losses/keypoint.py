"""Keypoint separation ("keypoint distance") loss of DaGAN (CVPR 2022, sec. 3.2), MCNet and SMAC.

The official code (SMAC ``basicsr/losses/losses.py`` ``KPDistanceLoss``; MCNet and DaGAN ``modules/model.py``
``GeneratorFullModel``, the same line in all three) penalises pairs of keypoints of one image that are closer than
a margin (0.2 in [-1, 1] coordinates), but builds the penalty from ``torch.sign`` of the distance:

    official = mean_{b,i,j} (1 - sign(sqrt(||k_i - k_j||^2 + 1e-8) + 0.2 [i = j] - 0.2))

summed over the source and the driving keypoints.  It is piecewise constant, so its gradient is exactly zero
and the nominal weight trains nothing; ``mode='official'`` computes exactly this (the paper recipes use it, so
a run trains as the released models were trained).  ``mode='hinge'`` (the class default, thkit's correction,
an opt-in in those recipes) keeps the intent with a real gradient: a squared hinge on the pairwise distances,

    L = weight * mean_{b, i != j} (max(0, margin - sqrt(||k_i - k_j||^2 + eps)) / margin)^2

(0 when all keypoints are at least ``margin`` apart, 1 when all collapse to one point), summed over the
source and the driving keypoints as in the official code.  It is C^1, so gradient descent pushes close
keypoints apart smoothly and leaves well-separated ones alone.
"""
from __future__ import annotations

import torch

from thkit.losses._base import Loss
from thkit.registry import LOSSES

Tensor = torch.Tensor


def pairwise_separation(value: Tensor, margin: float, eps: float = 1e-8) -> Tensor:
    """Mean squared-hinge penalty over the ordered pairs ``i != j`` of ``value`` (B, K, 2)."""
    if value.dim() != 3 or value.shape[-1] != 2:
        raise ValueError(f"keypoints must be (B, K, 2), got {tuple(value.shape)}")
    k = value.shape[1]
    if k < 2:
        return value.new_zeros(())
    diff = value.unsqueeze(2) - value.unsqueeze(1)
    dist = torch.sqrt((diff**2).sum(-1) + eps)
    off = ~torch.eye(k, dtype=torch.bool, device=value.device)
    hinge = torch.relu(margin - dist[:, off]) / margin
    return (hinge**2).mean()


def official_separation(value: Tensor, margin: float, eps: float = 1e-8) -> Tensor:
    """The official ``sign`` penalty on ``value`` (B, K, 2): ``mean(1 - sign(dist + margin * I - margin))``,
    with ``dist = sqrt(||k_i - k_j||^2 + eps)`` over all ordered pairs, the diagonal included (there ``dist +
    margin - margin = sqrt(eps) > 0`` counts 0).  Its gradient is exactly zero."""
    if value.dim() != 3 or value.shape[-1] != 2:
        raise ValueError(f"keypoints must be (B, K, 2), got {tuple(value.shape)}")
    k = value.shape[1]
    diff = value.unsqueeze(2) - value.unsqueeze(1)
    eye = torch.eye(k, dtype=value.dtype, device=value.device)
    dist = torch.sqrt((diff * diff).sum(-1) + eps) + eye * margin
    return (1 - torch.sign(dist - margin)).mean()


_MODES = {"official": official_separation, "hinge": pairwise_separation}


@LOSSES.register_module()
class KeypointDistanceLoss(Loss):
    """Keypoint separation loss (DaGAN/MCNet/SMAC ``KPDistanceLoss``), official or with a real gradient.

    Inputs: ``kp_driving`` <- ``kp_driving``, ``kp_source`` <- ``kp_source`` (optional; the official loss sums
    both).  Args: ``weight`` (official 1 in SMAC, 10 in DaGAN/MCNet), ``margin`` (official 0.2), ``eps`` inside
    the square root (official 1e-8), ``mode``: ``'official'`` (the ``sign`` penalty of the official code: its value
    is logged, its gradient is exactly zero) or ``'hinge'`` (default; thkit's squared hinge, which trains).
    """

    default_inputs = {"kp_driving": "kp_driving", "kp_source": "kp_source"}

    def __init__(self, weight: float = 1.0, margin: float = 0.2, eps: float = 1e-8, mode: str = "hinge"):
        super().__init__(weight)
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))} ('official': the official sign() "
                             f"penalty, zero gradient; 'hinge': thkit's, trains), got {mode!r}")
        self.margin = float(margin)
        self.eps = float(eps)
        self.mode = mode

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, margin={self.margin:g}, mode={self.mode!r}"

    def forward(self, kp_driving: dict[str, Tensor], kp_source: dict[str, Tensor] | None = None) -> Tensor:
        penalty = _MODES[self.mode]
        total = penalty(kp_driving["value"], self.margin, self.eps)
        if kp_source is not None:
            total = total + penalty(kp_source["value"], self.margin, self.eps)
        return self.weight * total

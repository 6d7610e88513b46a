"""Pixel reconstruction loss (SMAC's ``pixel_opt``: L1 between the output and the driving frame)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from thkit.losses._base import Loss, check_same_shape
from thkit.registry import LOSSES

Tensor = torch.Tensor


@LOSSES.register_module()
class L1Loss(Loss):
    """``weight * mean |prediction - target|`` (SMAC ``pixel_opt``, weight 1).

    Inputs: ``pred`` <- ``prediction``, ``target`` <- ``driving``.
    """

    default_inputs = {"pred": "prediction", "target": "driving"}

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(pred, target, "L1Loss(pred, target)")
        return self.weight * F.l1_loss(pred, target)

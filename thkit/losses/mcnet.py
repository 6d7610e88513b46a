"""MCNet's memory feature-consistency loss (Hong & Xu, ICCV 2023, sec. 3.4; official ``feat_consistent``, x10)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from thkit.losses._base import Loss, as_list
from thkit.registry import LOSSES

Tensor = torch.Tensor


@LOSSES.register_module()
class MemoryConsistencyLoss(Loss):
    """``weight * sum_s mean |V_s - sg(resize(F_s))|``: the memory's values ``V_s`` (S x S) learn to match the
    projected warped features ``F_s`` of each compensated scale, bilinearly resized to S x S (``align_corners``,
    official True) and detached (the official ``GeneratorFullModel``'s ``l1(feat, value)``).

    Inputs: ``features`` <- ``memory_features``, ``values`` <- ``memory_values`` (the
    :class:`~thkit.compensate.mcnet.MemoryCompensator`'s outputs, one per scale).
    """

    default_inputs = {"features": "memory_features", "values": "memory_values"}

    def __init__(self, weight: float = 10.0, align_corners: bool = True):
        super().__init__(weight)
        self.align_corners = bool(align_corners)

    def forward(self, features: Sequence[Tensor], values: Sequence[Tensor]) -> Tensor:
        feats, vals = as_list(features, "features"), as_list(values, "values")
        if len(feats) != len(vals) or not feats:
            raise ValueError(f"MemoryConsistencyLoss needs one value per feature, got {len(feats)} features and "
                             f"{len(vals)} values")
        total = vals[0].new_zeros(())
        for f, v in zip(feats, vals):
            if f.shape[2:] != v.shape[2:]:
                f = F.interpolate(f, size=v.shape[2:], mode="bilinear", align_corners=self.align_corners)
            total = total + (f.detach() - v).abs().mean()
        return self.weight * total

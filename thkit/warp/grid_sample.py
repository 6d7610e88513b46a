"""Backward warping with :func:`torch.nn.functional.grid_sample` (FOMM eq. 6 applied to features)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from thkit.interfaces import Warper
from thkit.registry import WARPERS

Tensor = torch.Tensor


def resize_flow(deformation: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """Bilinearly resize a (B, h, w, 2) flow to ``size`` (values are normalised, so they stay as they are)."""
    if tuple(deformation.shape[1:3]) == tuple(size):
        return deformation
    flow = deformation.permute(0, 3, 1, 2)
    flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=align_corners)
    return flow.permute(0, 2, 3, 1)


def warp_by_each(image: Tensor, flows: Tensor, align_corners: bool) -> Tensor:
    """``image`` (B, C, h, w) warped by each of N flows (B, N, h, w, 2): (B, N, C, h, w).

    The deformed sources of the FOMM family's dense motion networks (FOMM eq. 5's ``S(T^k(z))``, TPSMM's
    warped sources), in one batched ``grid_sample``.
    """
    b, c, h, w = image.shape
    n = flows.shape[1]
    repeated = image.unsqueeze(1).expand(b, n, c, h, w).reshape(b * n, c, h, w)
    warped = F.grid_sample(repeated, flows.reshape(b * n, h, w, 2), align_corners=align_corners)
    return warped.reshape(b, n, c, h, w)


def select_occlusion(occlusions: Tensor | Sequence[Tensor] | None, size: tuple[int, int]) -> Tensor | None:
    """The occlusion map for a feature of ``size``: the one of that size, else the finest one."""
    if occlusions is None:
        return None
    if isinstance(occlusions, Tensor):
        return occlusions
    if len(occlusions) == 0:
        return None
    for occ in occlusions:
        if tuple(occ.shape[2:]) == tuple(size):
            return occ
    return occlusions[-1]


@WARPERS.register_module()
class GridSampleWarper(Warper):
    """Warp features with a backward flow: ``out(z) = feat(T(z)) * occ(z)``.

    The flow and the occlusion map are bilinearly resized to the feature size when they differ.
    ``align_corners`` applies to the sampling and to both resizes (FOMM's released weights: ``True``,
    being trained on torch 1.0; TPSMM: ``True``; official FOMM code on today's torch: ``False``).
    """

    def __init__(self, align_corners: bool = True, padding_mode: str = "zeros", mode: str = "bilinear"):
        super().__init__()
        self.align_corners = bool(align_corners)
        self.padding_mode = padding_mode
        self.mode = mode

    def extra_repr(self) -> str:
        return f"align_corners={self.align_corners}, padding_mode={self.padding_mode!r}"

    def forward(self, feature: Tensor, deformation: Tensor,
                occlusion: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        size = tuple(feature.shape[2:])
        out = self._sample(feature, resize_flow(deformation, size, self.align_corners))
        occ = select_occlusion(occlusion, size)
        if occ is not None:
            if tuple(occ.shape[2:]) != size:
                occ = F.interpolate(occ, size=size, mode="bilinear", align_corners=self.align_corners)
            out = out * occ
        return out

    def warp_at(self, feature: Tensor, deformation: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """``forward(feature, deformation)`` (no occlusion) on the output rows ``rows`` and columns ``cols`` only
        (index tensors): ``(B, C, len(rows), len(cols))``, the same values as those pixels of the whole warp."""
        flow = resize_flow(deformation, tuple(feature.shape[2:]), self.align_corners)
        return self._sample(feature, flow.index_select(1, rows).index_select(2, cols))

    def _sample(self, feature: Tensor, flow: Tensor) -> Tensor:
        """``feature`` sampled at ``flow`` (``(B, h, w, 2)``, already at the output size) with this warper's
        settings."""
        return F.grid_sample(feature, flow.to(feature.dtype), mode=self.mode, padding_mode=self.padding_mode,
                             align_corners=self.align_corners)

    def warp_image(self, image: Tensor, deformation: Tensor) -> Tensor:
        """Warp an image (no occlusion): the ``deformed`` source of the FOMM family."""
        return self.forward(image, deformation, None)

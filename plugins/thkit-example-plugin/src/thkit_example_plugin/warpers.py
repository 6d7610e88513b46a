"""A bicubic, border-padded warper for thkit."""
from __future__ import annotations

from thkit.registry import WARPERS
from thkit.warp import GridSampleWarper


@WARPERS.register_module()
class BicubicBorderWarper(GridSampleWarper):
    """Bicubic ``grid_sample`` with border padding (sharper than bilinear; no black borders)."""

    def __init__(self, align_corners: bool = True):
        super().__init__(align_corners=align_corners, padding_mode="border", mode="bicubic")

"""Warpers: move source features along a dense flow (and mask them with occlusion)."""
from thkit.warp.grid_sample import GridSampleWarper, resize_flow, select_occlusion, warp_by_each

__all__ = ["GridSampleWarper", "resize_flow", "select_occlusion", "warp_by_each"]

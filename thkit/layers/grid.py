"""Coordinate grids and Gaussian keypoint heatmaps shared by every FOMM-family part."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def make_coordinate_grid(height: int, width: int, dtype=torch.float32, device=None) -> Tensor:
    """(H, W, 2) grid of ``(x, y)`` with endpoints exactly -1 and +1.

    x_j = 2 j / (W - 1) - 1, y_i = 2 i / (H - 1) - 1 (FOMM eq. for the identity flow; the convention of
    ``align_corners=True``).  Built with the same operation order as the official code so that results
    agree to the last bit.
    """
    x = torch.arange(width, dtype=dtype, device=device)
    y = torch.arange(height, dtype=dtype, device=device)
    x = 2 * (x / (width - 1)) - 1
    y = 2 * (y / (height - 1)) - 1
    xx = x.view(1, -1).expand(height, width)
    yy = y.view(-1, 1).expand(height, width)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(value: Tensor, spatial_size: tuple[int, int], kp_variance: float) -> Tensor:
    """Gaussian heatmaps ``G(z) = exp(-0.5 |z - kp|^2 / variance)`` (FOMM sec. 3.2), shape (..., H, W)."""
    grid = make_coordinate_grid(*spatial_size, dtype=value.dtype, device=value.device)
    lead = value.shape[:-1]
    diff = grid.view((1,) * len(lead) + grid.shape) - value.view(*lead, 1, 1, 2)
    return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)

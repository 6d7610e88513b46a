"""MRFA's multi-level generator (Tao et al., NeurIPS 2023; the official ``OcclusionAwareGenerator.decode``).

The decoder starts from the coarsest refined-warped feature and, at every level, fuses the feature warped by the
*prior* flow (a :class:`ChannelBlock2d` halves the concatenation), applies a ResBlock and an UpBlock, and blends with
the next level's refined-warped feature by the refined occlusion: ``x = w_{i+1} o_{i+1} + x (1 - o_{i+1})``.  The
output is ``sigmoid(final(x)) (1 - o) + deformed o`` with the finest occlusion ``o`` and the source warped by the
refined flow.  Module names (``up_blocks``, ``resblock``, ``channel_block``, ``final``) are the official ones; the
encoder half of the official generator (``first``, ``down_blocks``) is :class:`~thkit.encode.fomm.FOMMEncoder`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.interfaces import Decoder
from thkit.layers import ResBlock2d, UpBlock2d, make_norm
from thkit.registry import DECODERS

Tensor = torch.Tensor

__all__ = ["ChannelBlock2d", "MultiLevelFusionDecoder"]


class ChannelBlock2d(nn.Module):
    """norm -> ReLU -> 3x3 conv halving the channels (no residual): MRFA's fusion of the two warped features."""

    def __init__(self, in_features: int, norm: str = "batch"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features // 2, 3, padding=1)
        self.norm1 = make_norm(norm, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(F.relu(self.norm1(x)))


@DECODERS.register_module()
class MultiLevelFusionDecoder(Decoder):
    """MRFA's multi-level generator: one ResBlock + UpBlock per level, occlusion blending at every level.

    Takes the compensator's refined-warped features (``features``, fine to coarse, not yet occluded) and, from
    ``ctx['compensation']`` (a :class:`~thkit.compensate.mrfa.MotionRefinementCompensator`'s output or any with the
    same keys): ``occlusion_list`` (coarse to fine), ``prior_features`` (fine to coarse; with ``fuse_prior``) and
    ``deformed`` (``ctx['deformed']``).

    Args:
        out_channels, block_expansion, max_features, num_up_blocks: widths ``min(max_features, block_expansion 2^i)``
            at stride ``2^i`` (vox1: 3, 64, 512, 5), as the matching :class:`~thkit.encode.fomm.FOMMEncoder`.
        fuse_prior: concatenate the prior-warped feature at every level but the finest (``channel_block``); official
            ``prior_only`` is without.

    Returns ``prediction`` (B, C, H, W).
    """

    def __init__(self, out_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_up_blocks: int = 5, fuse_prior: bool = True, norm: str = "batch"):
        super().__init__()
        self.num_up_blocks = n = int(num_up_blocks)
        self.fuse_prior = bool(fuse_prior)
        ups, res, chans = [], [], []
        for i in reversed(range(n)):
            cin = min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            ups.append(UpBlock2d(cout, cin, norm=norm))
            res.append(ResBlock2d(cout, norm=norm))
            chans.append(ChannelBlock2d(2 * cout, norm=norm))
        self.up_blocks = nn.ModuleList(ups)
        self.resblock = nn.ModuleList(res)
        self.channel_block = nn.ModuleList(chans) if self.fuse_prior else None
        self.final = nn.Conv2d(block_expansion, out_channels, kernel_size=7, padding=3)
        self.in_channels = [min(max_features, block_expansion * 2**i) for i in reversed(range(n + 1))]

    def forward(self, features: list[Tensor], ctx: dict[str, Any]) -> dict[str, Tensor]:
        comp = (ctx or {}).get("compensation") or {}
        if "occlusion_list" not in comp or (self.fuse_prior and "prior_features" not in comp):
            raise ValueError("MultiLevelFusionDecoder needs the occlusion_list (and prior_features) of a flow-refining "
                             "compensator (e.g. MotionRefinementCompensator) in ctx['compensation']")
        warped = list(features)[::-1]
        occ = comp["occlusion_list"]
        got = [f.shape[1] for f in warped]
        if got != self.in_channels or len(occ) != len(warped):
            raise ValueError(f"MultiLevelFusionDecoder expects {len(self.in_channels)} features of widths (coarse to "
                             f"fine) {self.in_channels} and as many occlusions; got {got} and {len(occ)}")
        prior = list(comp["prior_features"])[::-1] if self.fuse_prior else None
        x = warped[0] * occ[0]
        if prior is not None:
            x = torch.cat([x, prior[0]], dim=1)
        for i in range(self.num_up_blocks):
            if prior is not None:
                x = self.channel_block[i](x)
            x = self.up_blocks[i](self.resblock[i](x))
            x = warped[i + 1] * occ[i + 1] + x * (1 - occ[i + 1])
            if prior is not None and i != self.num_up_blocks - 1:
                x = torch.cat([x, prior[i + 1]], dim=1)
        x = torch.sigmoid(self.final(x))
        return {"prediction": x * (1 - occ[-1]) + ctx["deformed"] * occ[-1]}

"""The TPSMM inpainting network's decoder (Zhao & Zhang, CVPR 2022, sec. 3.2, multi-resolution occlusion)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.interfaces import Decoder
from thkit.layers import ResBlock2d, UpBlock2d
from thkit.registry import DECODERS

Tensor = torch.Tensor


@DECODERS.register_module()
class TPSMMDecoder(Decoder):
    """TPSMM inpainting decoder: per level 2 ResBlocks + an UpBlock, skip-concatenating the warped features.

    ``features`` are the warped, occlusion-masked encoder features, fine to coarse (from
    :class:`~thkit.encode.tpsmm.TPSMMEncoder` through the warper, each level masked by the occlusion map of
    its resolution, paper sec. 3.2).  Starting at the coarsest, each of the ``num_down_blocks`` steps runs
    ``resblock[2i]``, ``resblock[2i+1]`` and ``up_blocks[i]``; its output is concatenated with the next
    finer warped level, except after the last step.  Then, exactly as the official code (fixture quirk 8)::

        x = x * (1 - O) + F_0          # O: finest occlusion map; F_0 = the warped full-resolution feature,
                                       #    which is already multiplied by O (the mask acts twice)
        g = sigmoid(final(x))          # 7x7 conv
        prediction = g * (1 - O) + deformed * O      # deformed: the source warped by the flow

    Returns ``prediction`` and ``warped_encoder_maps``: the warped, occluded encoder features for the warp
    loss, fine to coarse (the official list is coarse to fine), computed from detached encoder features and
    detached occlusion maps, so only the flow receives the warp loss's gradient (as officially).  Under
    ``torch.no_grad`` they are the detached decoder inputs (the same numbers).

    Module names (``resblock.j``, ``up_blocks.i``, ``final``) match the official ``InpaintingNetwork``.
    """

    def __init__(self, out_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 3, norm: str = "instance"):
        super().__init__()
        self.num_down_blocks = int(num_down_blocks)
        if self.num_down_blocks < 1:
            raise ValueError(f"num_down_blocks must be >= 1, got {num_down_blocks}")
        widths = [min(max_features, block_expansion * 2**i) for i in range(self.num_down_blocks + 1)]
        self.in_channels = list(widths)  # expected widths of the warped features, fine to coarse
        res, ups = [], []
        for step in range(self.num_down_blocks):  # coarsest first
            level = self.num_down_blocks - step
            cin = widths[level] if step == 0 else 2 * widths[level]
            res += [ResBlock2d(cin, kernel_size=3, padding=1, norm=norm),
                    ResBlock2d(cin, kernel_size=3, padding=1, norm=norm)]
            ups.append(UpBlock2d(cin, widths[level - 1], kernel_size=3, padding=1, norm=norm))
        self.resblock = nn.ModuleList(res)
        self.up_blocks = nn.ModuleList(ups)
        self.final = nn.Conv2d(block_expansion, out_channels, kernel_size=7, padding=3)

    def forward(self, features: list[Tensor], ctx: dict[str, Any]) -> dict[str, Any]:
        feats = list(features)
        if len(feats) != self.num_down_blocks + 1:
            raise ValueError(f"TPSMMDecoder expects {self.num_down_blocks + 1} warped features (fine to coarse), "
                             f"got {len(feats)}")
        got = [f.shape[1] for f in feats]
        if got != self.in_channels:
            raise ValueError(f"TPSMMDecoder expects feature widths {self.in_channels} (fine to coarse), got {got}")
        for key in ("deformed", "motion"):
            if key not in ctx:
                raise ValueError(f"TPSMMDecoder needs ctx[{key!r}] (built by TalkingHeadModel)")
        occlusion = ctx["motion"]["occlusion_map"]
        occ = occlusion if isinstance(occlusion, Tensor) else occlusion[-1]
        align = getattr(ctx.get("warper"), "align_corners", True)

        x = feats[-1]
        for step in range(self.num_down_blocks):
            x = self.resblock[2 * step + 1](self.resblock[2 * step](x))
            x = self.up_blocks[step](x)
            if step < self.num_down_blocks - 1:
                x = torch.cat([x, feats[-(step + 2)]], dim=1)
        if tuple(occ.shape[2:]) != tuple(x.shape[2:]):
            occ = F.interpolate(occ, size=x.shape[2:], mode="bilinear", align_corners=align)
        x = x * (1 - occ) + feats[0]
        x = torch.sigmoid(self.final(x))
        prediction = x * (1 - occ) + ctx["deformed"] * occ
        return {"prediction": prediction, "warped_encoder_maps": self._warped_for_loss(feats, ctx)}

    @staticmethod
    def _warped_for_loss(feats: list[Tensor], ctx: dict[str, Any]) -> list[Tensor]:
        """Warped features with gradient to the flow only (official ``encode_ij``); detached under no_grad."""
        raw, warper = ctx.get("features"), ctx.get("warper")
        if not torch.is_grad_enabled() or raw is None or warper is None:
            return [f.detach() for f in feats]
        motion = ctx["motion"]
        occlusion = motion["occlusion_map"]
        occ = occlusion.detach() if isinstance(occlusion, Tensor) else [o.detach() for o in occlusion]
        return [warper(f.detach(), motion["deformation"], occ) for f in raw]

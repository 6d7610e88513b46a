"""The TPSMM inpainting network's encoder (Zhao & Zhang, CVPR 2022, sec. 3.2).

The same layout as FOMM's generator encoder (a 7x7 :class:`~thkit.layers.SameBlock2d`, then down blocks),
with InstanceNorm and every level kept, so it is :class:`~thkit.encode.fomm.FOMMEncoder` with TPSMM's
defaults plus the encoder side of TPSMM's warp loss (:meth:`TPSMMEncoder.occluded_features`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from thkit.encode.fomm import FOMMEncoder
from thkit.registry import ENCODERS
from thkit.warp.grid_sample import select_occlusion

Tensor = torch.Tensor


@ENCODERS.register_module()
class TPSMMEncoder(FOMMEncoder):
    """TPSMM encoder: ``first`` (7x7 SameBlock) + ``num_down_blocks`` DownBlocks, InstanceNorm (affine).

    Returns all ``num_down_blocks + 1`` levels, fine to coarse (official vox-256: 64 ch at 256 px, 128 at
    128, 256 at 64, 512 at 32).  Module names match the official ``InpaintingNetwork`` (``first``,
    ``down_blocks.i``).
    """

    def __init__(self, in_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 3, norm: str = "instance"):
        super().__init__(in_channels=in_channels, block_expansion=block_expansion, max_features=max_features,
                         num_down_blocks=num_down_blocks, out_indices=None, norm=norm)

    @torch.no_grad()
    def occluded_features(self, image: Tensor, occlusion_map: Sequence[Tensor] | Tensor,
                          align_corners: bool = True) -> list[Tensor]:
        """Encoder features of ``image`` times the occlusion mask of their size; no gradient (TPSMM warp loss).

        The official ``InpaintingNetwork.get_encode(driving, occlusion_map)``: the driving image's features,
        fine to coarse, each multiplied by the occlusion mask of the same resolution (bilinearly resized
        with ``align_corners`` when none matches), all detached.  The warp loss (paper sec. 3.3) is
        ``sum_i |occluded_features(driving)[i] - warped_encoder_maps[i]|_1`` with the decoder's
        ``warped_encoder_maps`` (same fine-to-coarse order).
        """
        feats = [self.first(image)]
        for block in self.down_blocks:
            feats.append(block(feats[-1]))
        out = []
        for f in feats:
            occ = select_occlusion(occlusion_map, tuple(f.shape[2:]))
            if occ is None:
                out.append(f)
                continue
            if tuple(occ.shape[2:]) != tuple(f.shape[2:]):
                occ = F.interpolate(occ, size=f.shape[2:], mode="bilinear", align_corners=align_corners)
            out.append(f * occ)
        return out

"""MCNet's U-Net encoder (Hong & Xu, ICCV 2023, sec. 3.1; the official ``Unet_Generator_keypoint_aware``).

FOMM's generator encoder (:class:`~thkit.encode.fomm.FOMMEncoder`: a 7x7 SameBlock, then DownBlocks, BatchNorm)
with every level returned: the U-Net's skips.  Official vox-256: 64 ch at 256 px, 128 at 128, 256 at 64, 512 at 32.
"""
from __future__ import annotations

from thkit.encode.fomm import FOMMEncoder
from thkit.registry import ENCODERS


@ENCODERS.register_module()
class MCNetEncoder(FOMMEncoder):
    """MCNet encoder: ``first`` + ``num_down_blocks`` DownBlocks (BatchNorm), all levels, fine to coarse."""

    def __init__(self, in_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 3, norm: str = "batch"):
        super().__init__(in_channels=in_channels, block_expansion=block_expansion, max_features=max_features,
                         num_down_blocks=num_down_blocks, out_indices=None, norm=norm)

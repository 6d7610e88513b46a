"""MCNet's keypoint-aware U-Net decoder (Hong & Xu, ICCV 2023, sec. 3.1 and Fig. 2).

The official ``Unet_Generator_keypoint_aware`` decodes exactly as TPSMM's inpainting decoder
(:class:`~thkit.decode.tpsmm.TPSMMDecoder`), with BatchNorm: from the (memory-compensated) warped 32 px feature,
per level two ResBlocks and an UpBlock, concatenated with the next finer warped, occluded (and compensated) skip;
then the occlusion blend of fixture quirk 8::

    x = x * (1 - O) + F_0            # F_0: the warped, occluded full-resolution feature (not compensated)
    prediction = sigmoid(final(x)) * (1 - O) + warp(source) * O

with the single 64 px occlusion map bilinearly resized (``align_corners`` of the warper).  The compensation of the
skips is the compensator's work (:class:`~thkit.compensate.mcnet.MemoryCompensator`), so this decoder takes any
compensator's output, or plain warped features.
"""
from __future__ import annotations

from thkit.decode.tpsmm import TPSMMDecoder
from thkit.registry import DECODERS


@DECODERS.register_module()
class MCNetDecoder(TPSMMDecoder):
    """MCNet decoder: :class:`~thkit.decode.tpsmm.TPSMMDecoder` with BatchNorm (official widths for
    ``block_expansion * 2**num_down_blocks == max_features``: ResBlocks at 512, 512, 256; UpBlocks to 256, 128, 64).
    Module names (``resblock.j``, ``up_blocks.i``, ``final``) match the official generator's."""

    def __init__(self, out_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 3, norm: str = "batch"):
        if block_expansion * 2**num_down_blocks != max_features:
            raise ValueError(f"MCNetDecoder: block_expansion * 2**num_down_blocks must equal max_features (the "
                             f"official decoder widths max_features / 2**i), got {block_expansion} * "
                             f"2**{num_down_blocks} != {max_features}")
        super().__init__(out_channels=out_channels, block_expansion=block_expansion, max_features=max_features,
                         num_down_blocks=num_down_blocks, norm=norm)

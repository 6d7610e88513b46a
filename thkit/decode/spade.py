"""DaGAN's SPADE decoder (Hong et al., "Depth-Aware Generative Adversarial Network for Talking Head Video
Generation", CVPR 2022; official ``modules/generator.py``: ``SPADEGenerator``, the decoder of
``SPADEDepthAwareGenerator``, released as ``SPADE_DaGAN_vox_adv_256.pth.tar``).

The decoder replaces the FOMM decoder (ResBlocks + up blocks) by SPADE residual blocks (Park et al., CVPR 2019;
:mod:`thkit.layers.spade`) whose label map is built from the generator's own evidence: the (depth-attended) warped
feature compressed to ``label_channels`` channels and nearest-upsampled to the image size, concatenated with the
source warped by the flow and multiplied by the occlusion map (bilinearly resized to the image size)::

    label = cat(nearest(compress(f), image size), deformed * occlusion)     # 4 + 3 = 7 channels
    x = fc(f)                                                               # 256 -> 512, at the feature size
    x = G_middle_2(G_middle_1(G_middle_0(x, label), label), label)         # SPADE ResBlocks, 512
    x = up_1(up(up_0(up(x), label)), label)                                 # nearest x2; 512 -> 256 -> 64
    prediction = sigmoid(conv_img(leaky_relu(x, 0.2)))

The official class hard-codes the widths (``ic`` 256, ``cc`` 4, ``oc`` 64, SPADE's hidden 128); here they are
constructor arguments with those defaults, so smaller variants can shrink them.  The SPADE norm is
``spadespectralinstance``: a parameter-free InstanceNorm and spectrally normalised convs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.interfaces import Decoder
from thkit.layers.spade import SPADEResBlock
from thkit.registry import DECODERS
from thkit.warp.grid_sample import select_occlusion

Tensor = torch.Tensor


@DECODERS.register_module()
class SPADEDecoder(Decoder):
    """SPADE decoder of DaGAN's ``SPADEDepthAwareGenerator`` (official ``SPADEGenerator``), see the module docstring.

    Args:
        in_channels: width of the (compensated) coarsest warped feature it decodes (official ``ic``: 256).
        label_channels: channels the feature is compressed to for the label map (official ``cc``: 4).
        out_features: width of the last SPADE block (official ``oc``: 64).
        hidden_channels: SPADE's shared conv width (official ``nhidden``: 128).
        num_middle_blocks: SPADE ResBlocks at ``2 * in_channels`` before upsampling (official: 3).
        out_channels: image channels of the prediction and of the deformed source in the label map (3).
        spectral_norm: spectral norm on the SPADE blocks' convs (official: yes).
        norm: SPADE's parameter-free norm (official: ``'instance'``).
        align_corners: of the bilinear resize of the occlusion map to the image size (official code on today's
            torch: ``False``).

    Reads ``ctx['deformed']`` (the source warped by the flow at image size) and ``ctx['motion']['occlusion_map']``
    (the map of the image size, else the finest; none: the deformed source unmasked).  The output is two nearest
    x2 upsamplings larger than the feature and must match the deformed source's size.  Returns ``{'prediction'}``.
    """

    def __init__(self, in_channels: int = 256, label_channels: int = 4, out_features: int = 64,
                 hidden_channels: int = 128, num_middle_blocks: int = 3, out_channels: int = 3,
                 spectral_norm: bool = True, norm: str = "instance", align_corners: bool = False):
        super().__init__()
        ic, cc, oc = int(in_channels), int(label_channels), int(out_features)
        if min(ic, cc, oc, int(hidden_channels), int(out_channels)) < 1 or int(num_middle_blocks) < 0:
            raise ValueError(f"SPADEDecoder widths must be positive (in_channels={in_channels}, label_channels="
                             f"{label_channels}, out_features={out_features}, hidden_channels={hidden_channels}) "
                             f"and num_middle_blocks >= 0 (got {num_middle_blocks})")
        self.in_channels = ic
        self.out_channels = int(out_channels)
        self.align_corners = bool(align_corners)
        label_nc = cc + self.out_channels
        block = dict(label_channels=label_nc, hidden_channels=int(hidden_channels), norm=norm,
                     spectral_norm=spectral_norm)
        self.compress = nn.Conv2d(ic, cc, 3, padding=1)
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        self.middle = nn.ModuleList(SPADEResBlock(2 * ic, 2 * ic, **block) for _ in range(int(num_middle_blocks)))
        self.up_blocks = nn.ModuleList([SPADEResBlock(2 * ic, ic, **block), SPADEResBlock(ic, oc, **block)])
        self.conv_img = nn.Conv2d(oc, self.out_channels, 3, padding=1)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, align_corners={self.align_corners}"

    def label_image(self, ctx: dict[str, Any]) -> Tensor:
        """The image part of the label map: ``deformed * occlusion`` (occlusion resized to the image size)."""
        if "deformed" not in ctx or "motion" not in ctx:
            raise ValueError("SPADEDecoder needs ctx['deformed'] and ctx['motion'] (built by TalkingHeadModel)")
        deformed = ctx["deformed"]
        size = tuple(deformed.shape[2:])
        occ = select_occlusion(ctx["motion"].get("occlusion_map"), size)
        if occ is None:
            return deformed
        if tuple(occ.shape[2:]) != size:
            occ = F.interpolate(occ, size=size, mode="bilinear", align_corners=self.align_corners)
        return deformed * occ

    def forward(self, features: list[Tensor] | Tensor, ctx: dict[str, Any]) -> dict[str, Tensor]:
        feature = features if isinstance(features, Tensor) else features[-1]
        if feature.shape[1] != self.in_channels:
            raise ValueError(f"SPADEDecoder expects the coarsest feature with {self.in_channels} channels (its "
                             f"in_channels), got shape {tuple(feature.shape)}")
        image = self.label_image(ctx)
        h, w = feature.shape[2:]
        if tuple(image.shape[2:]) != (4 * h, 4 * w) or image.shape[1] != self.out_channels:
            raise ValueError(f"SPADEDecoder upsamples the {h}x{w} feature 4 times, so the deformed source must be "
                             f"(B, {self.out_channels}, {4 * h}, {4 * w}); got {tuple(image.shape)}")
        label = torch.cat([F.interpolate(self.compress(feature), size=image.shape[2:], mode="nearest"), image], 1)
        x = self.fc(feature)
        for block in self.middle:
            x = block(x, label)
        for block in self.up_blocks:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), label)
        return {"prediction": torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))}

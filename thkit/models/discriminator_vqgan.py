"""VQGAN's PatchGAN discriminator (Esser et al., CVPR 2021; Isola et al. 2017), SMAC's adversarial critic.

SMAC trains it with the hinge loss and VQGAN's adaptive weight (:class:`~thkit.losses.gan.HingeGANLoss`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from thkit.interfaces import Discriminator
from thkit.registry import DISCRIMINATORS

Tensor = torch.Tensor


@DISCRIMINATORS.register_module()
class VQGANDiscriminator(Discriminator):
    """PatchGAN: 4x4 stride-2 conv + LeakyReLU(0.2), then ``n_layers - 1`` x (4x4 stride-2 conv without bias,
    BatchNorm, LeakyReLU), one 4x4 stride-1 conv + BatchNorm + LeakyReLU, and a 4x4 stride-1 conv to 1 channel.
    Widths ``ndf * min(2**n, 8)``.  ``main`` is laid out as the lineage's ``nn.Sequential`` (official keys map 1:1).

    ``forward(image, kp=None)`` returns ``{'feature_maps': {'1': [...]}, 'prediction_map': {'1': (B, 1, h, w)}}``
    (the layout of :class:`~thkit.models.discriminator.MultiScaleDiscriminator`, one scale); the feature maps are
    the activations after each LeakyReLU.  ``kp`` is accepted and ignored (no keypoint conditioning).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False),
                   nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.main = nn.Sequential(*layers)

    def forward(self, image: Tensor, kp: Any = None) -> dict[str, dict[str, Any]]:
        feats = []
        x = image
        for layer in self.main:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return {"feature_maps": {"1": feats}, "prediction_map": {"1": x}}

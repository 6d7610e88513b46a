"""Multi-scale pix2pix-style patch discriminator (FOMM sec. 3.3 / appendix; Isola et al. 2017; Wang et al. 2018).

Used by FOMM (``vox-adv``: with keypoint heatmaps; ``vox``: spectral norm, never trained) and MCNet.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from thkit.interfaces import Discriminator
from thkit.layers import AntiAliasInterpolation2d, kp2gaussian
from thkit.registry import DISCRIMINATORS

Tensor = torch.Tensor


def _maybe_sn(conv: nn.Conv2d, sn: bool) -> nn.Module:
    # Old-style torch.nn.utils.spectral_norm: state-dict keys weight_orig / weight_u / weight_v (as the official
    # checkpoints).  In eval it does no power iteration: weight = weight_orig / (u . W v) with the stored u, v.
    return nn.utils.spectral_norm(conv) if sn else conv


class PatchDownBlock(nn.Module):
    """4x4 conv (no padding, optional spectral norm) -> InstanceNorm (affine; optional) -> LeakyReLU(0.2) -> pool."""

    def __init__(self, in_features: int, out_features: int, norm: bool, pool: bool, sn: bool, kernel_size: int = 4):
        super().__init__()
        self.conv = _maybe_sn(nn.Conv2d(in_features, out_features, kernel_size), sn)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        x = F.leaky_relu(x, 0.2)
        return F.avg_pool2d(x, (2, 2)) if self.pool else x


class PatchDiscriminator(nn.Module):
    """One scale: ``num_blocks`` PatchDownBlocks (no norm in the first, no pool in the last), then a 1x1 conv.

    With ``use_kp`` the input is ``[image, G(kp_1), ..., G(kp_K)]`` (Gaussian heatmaps, variance
    ``kp_variance``).  Returns ``(feature_maps, prediction_map)``.
    """

    def __init__(self, in_channels: int = 3, block_expansion: int = 64, num_blocks: int = 4, max_features: int = 512,
                 sn: bool = False, use_kp: bool = False, num_kp: int = 10, kp_variance: float = 0.01):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_channels + (num_kp if use_kp else 0) if i == 0 else min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(PatchDownBlock(cin, cout, norm=i != 0, pool=i != num_blocks - 1, sn=sn))
        self.down_blocks = nn.ModuleList(blocks)
        self.conv = _maybe_sn(nn.Conv2d(min(max_features, block_expansion * 2**num_blocks), 1, kernel_size=1), sn)
        self.use_kp = use_kp
        self.kp_variance = float(kp_variance)

    def forward(self, x: Tensor, kp: Mapping[str, Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        if self.use_kp:
            if kp is None:
                raise ValueError("this discriminator was built with use_kp=True; pass the driving keypoints as kp")
            heat = kp2gaussian(kp["value"], tuple(x.shape[2:]), self.kp_variance)
            x = torch.cat([x, heat.to(x.dtype)], dim=1)
        maps = []
        for block in self.down_blocks:
            x = block(x)
            maps.append(x)
        return maps, self.conv(x)


@DISCRIMINATORS.register_module()
class MultiScaleDiscriminator(Discriminator):
    """FOMM's multi-scale discriminator: one :class:`PatchDiscriminator` per scale of an image pyramid.

    ``forward(image, kp=None)`` takes an image (the pyramid is built here with anti-aliased downsampling,
    as FOMM's ``ImagePyramide``; the kernels are not part of the state dict) or a mapping
    ``{scale_name: image}`` of already scaled images.  Scale names are ``str(scale)`` (``'1'``, ``'0.5'``).

    Returns ``{'feature_maps': {scale_name: [map per block]}, 'prediction_map': {scale_name: (B, 1, h, w)}}``:
    the feature maps are each block's output after LeakyReLU (and pooling), used by feature matching; the
    prediction map is the final 1x1 conv with no activation (LSGAN).  The sub-networks live in
    ``discs[scale_name with '.' -> '-']`` (the official state-dict layout).
    """

    def __init__(self, scales: Sequence[float] = (1,), in_channels: int = 3, block_expansion: int = 64,
                 num_blocks: int = 4, max_features: int = 512, sn: bool = False, use_kp: bool = False,
                 num_kp: int = 10, kp_variance: float = 0.01):
        super().__init__()
        if not scales:
            raise ValueError("scales must list at least one scale (e.g. [1])")
        self.scale_names = [str(s) for s in scales]
        self.discs = nn.ModuleDict({
            name.replace(".", "-"): PatchDiscriminator(in_channels, block_expansion, num_blocks, max_features,
                                                       sn=sn, use_kp=use_kp, num_kp=num_kp, kp_variance=kp_variance)
            for name in self.scale_names
        })
        self.pyramid = nn.ModuleDict({
            name.replace(".", "-"): AntiAliasInterpolation2d(in_channels, float(s), persistent=False)
            for name, s in zip(self.scale_names, scales) if float(s) != 1.0
        })
        self.use_kp = use_kp
        self.uses_keypoints = bool(use_kp)  # the Discriminator hook: called with kp= when conditioned on them

    def forward(self, image: Tensor | Mapping[str, Tensor], kp: Mapping[str, Tensor] | None = None) -> dict:
        feature_maps, predictions = {}, {}
        for name in self.scale_names:
            key = name.replace(".", "-")
            if isinstance(image, Mapping):
                if name not in image:
                    raise KeyError(f"no image for scale {name!r} (got scales {', '.join(map(str, image))})")
                x = image[name]
            else:
                x = self.pyramid[key](image) if key in self.pyramid else image
            feature_maps[name], predictions[name] = self.discs[key](x, kp)
        return {"feature_maps": feature_maps, "prediction_map": predictions}

"""Self-supervised monocular depth network (Monodepth2-style; the depth network of DaGAN, Hong et al., CVPR 2022).

:class:`MonodepthDepthNet` is a registered ``encoder`` part (image -> maps, fine to coarse): a torchvision ResNet
encoder (ResNet-18 or ResNet-50, torchvision's blocks and module names) and the Monodepth2 depth decoder (reflection
padded 3x3 convs with ELU, nearest x2 upsampling, skip connections, a sigmoid disparity head per scale).  It returns
the disparities ``[disp_0, disp_1, ...]`` (``disp_0`` at the image size, each next one half as large); DaGAN uses
``disp_0`` directly as its "depth" (no ``disp_to_depth`` conversion).

Its weights come from their own file, a setting of the part (``weights=``, in the recipe or on the command line
``--cfg-options model.keypoint_detector.depth.weights=...``), never a hard-coded path: either the official folder
with ``encoder.pth`` and ``depth.pth`` (DaGAN's ``depth/models/weights_19`` for ResNet-18,
``depth_face_model_Voxceleb2_10w`` for ResNet-50) or one file with this part's own state dict.  The files are read
by :func:`thkit.convert.dagan.convert_depth`, which tells a ResNet-18 file from a ResNet-50 one and says which
``num_layers`` it needs when the recipe asks for the other.

The network is frozen by default (``trainable=False``: no gradients, kept in eval mode), as DaGAN trains it
separately and never updates it with the generator.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from thkit.interfaces import Encoder
from thkit.registry import ENCODERS

Tensor = torch.Tensor

#: torchvision's block type and layer counts per ResNet depth
RESNET_LAYERS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}
DEFAULT_STAGE_WIDTHS = (64, 128, 256, 512)
DEFAULT_DECODER_CHANNELS = (16, 32, 64, 128, 256)
#: Monodepth2's input normalisation: (x - 0.45) / 0.225
INPUT_MEAN, INPUT_STD = 0.45, 0.225


class _StageResNet(ResNet):
    """torchvision's ResNet (its blocks, module names, forward pieces and init) with settable stage widths.

    With the default widths it is exactly ``torchvision.models.resnet{18,50}()``; other widths are the parity
    fixture's patch (``RESNET_STAGE_WIDTHS``: the stem uses the first width).
    """

    def __init__(self, num_layers: int, widths: Sequence[int]):
        block, layers = RESNET_LAYERS[num_layers]
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = int(widths[0]), 1, 1, 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, int(widths[0]), layers[0])
        self.layer2 = self._make_layer(block, int(widths[1]), layers[1], stride=2)
        self.layer3 = self._make_layer(block, int(widths[2]), layers[2], stride=2)
        self.layer4 = self._make_layer(block, int(widths[3]), layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(int(widths[3]) * block.expansion, 1000)  # unused, kept for the official key layout
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


class _ConvELU(nn.Module):
    """Monodepth2's ``ConvBlock``: reflection-padded 3x3 conv and ELU (keys ``conv.conv.*``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _ReflConv3x3(cin, cout)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin(self.conv(x))


class _ReflConv3x3(nn.Module):
    """Monodepth2's ``Conv3x3``: ReflectionPad2d(1) + 3x3 conv (key ``conv.*``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(cin, cout, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pad(x))


@ENCODERS.register_module()
class MonodepthDepthNet(Encoder):
    """Monodepth2 ResNet encoder + depth decoder: image in ``[0, 1]`` -> sigmoid disparities, fine to coarse.

    Args:
        num_layers: the ResNet depth of the encoder (DaGAN: 18 for the demo's ``weights_19``, 50 for the training
            script's ``depth_face_model_Voxceleb2_10w``).
        weights: the depth weights: the official folder (``encoder.pth`` + ``depth.pth``) or a file with this part's
            state dict; ``None`` leaves the initial weights (they come with a converted model's checkpoint).
        scales: the disparity scales to return (0 = image size, ``s`` = 1/2**s of it), in that order.
        stage_widths: the ResNet stage widths (torchvision's 64/128/256/512; smaller only for tiny parity models).
        decoder_channels: the decoder widths per scale (Monodepth2's 16/32/64/128/256).
        trainable: update the depth network with the generator (DaGAN: no; it stays frozen and in eval mode).
        image_size: handed by the builder; checked (a multiple of 32, at least 64).

    Keys: ``encoder.*`` (torchvision's ResNet, with its unused ``fc``) and ``decoder.0..`` (the official
    ``DepthDecoder``'s module list: ten ConvBlocks, then one disparity conv per scale), so official files map
    one to one.
    """

    def __init__(self, num_layers: int = 18, weights: str | None = None, scales: Sequence[int] = (0, 1, 2, 3),
                 stage_widths: Sequence[int] = DEFAULT_STAGE_WIDTHS,
                 decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS, trainable: bool = False,
                 image_size: int | None = None):
        super().__init__()
        if image_size is not None and (int(image_size) < 64 or int(image_size) % 32):
            raise ValueError(f"image_size={image_size} px: the depth network needs a multiple of 32 of at least 64 "
                             f"px (its ResNet reduces the image 32 times and its decoder pads by reflection)")
        if num_layers not in RESNET_LAYERS:
            raise ValueError(f"num_layers={num_layers!r}: the depth encoder is a ResNet of "
                             f"{', '.join(map(str, RESNET_LAYERS))} layers")
        if len(stage_widths) != 4 or len(decoder_channels) != 5:
            raise ValueError(f"stage_widths needs 4 widths and decoder_channels 5, got {list(stage_widths)} and "
                             f"{list(decoder_channels)}")
        self.scales = [int(s) for s in scales]
        if not self.scales or any(not 0 <= s <= 3 for s in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales must be distinct values in 0..3 (0 = full size), got {list(scales)}")
        self.num_layers = int(num_layers)
        self.encoder = _StageResNet(self.num_layers, stage_widths)
        expansion = RESNET_LAYERS[self.num_layers][0].expansion
        w = [int(v) for v in stage_widths]
        self.num_ch_enc = [w[0], w[0] * expansion, w[1] * expansion, w[2] * expansion, w[3] * expansion]
        dec = [int(v) for v in decoder_channels]
        blocks: list[nn.Module] = []
        for i in range(4, -1, -1):
            cin = self.num_ch_enc[-1] if i == 4 else dec[i + 1]
            blocks.append(_ConvELU(cin, dec[i]))
            blocks.append(_ConvELU(dec[i] + (self.num_ch_enc[i - 1] if i > 0 else 0), dec[i]))
        self._disp_index = {}
        for s in range(4):  # the official decoder always builds the heads of its scales, in order 0..3
            if s in self.scales:
                self._disp_index[s] = len(blocks)
                blocks.append(_ReflConv3x3(dec[s], 1))
        self.decoder = nn.ModuleList(blocks)
        self.out_channels = [1] * len(self.scales)
        self.trainable = bool(trainable)
        self.weights = weights
        if weights is not None:
            self.load_weights(weights)
        if not self.trainable:
            self.requires_grad_(False)
            self.eval()

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, scales={self.scales}, trainable={self.trainable}"

    def load_weights(self, path: str) -> None:
        """Load the official folder / file at ``path`` (see the class docstring); errors name the setting."""
        from thkit.convert.dagan import convert_depth
        from thkit.errors import CheckpointError

        try:  # a ValueError: the builder reports it with this part's recipe path
            sd = convert_depth(path, expect_layers=self.num_layers, setting="depth weights")
        except CheckpointError as e:
            raise ValueError(str(e)) from e
        self.load_state_dict(sd, strict=True)

    def train(self, mode: bool = True) -> MonodepthDepthNet:
        return super().train(mode and self.trainable)

    def encode(self, image: Tensor) -> list[Tensor]:
        """The five ResNet features (the official ``ResnetEncoder.forward``: normalised input, stem, then each
        stage, the maxpool before ``layer1``)."""
        e = self.encoder
        x = e.relu(e.bn1(e.conv1((image - INPUT_MEAN) / INPUT_STD)))
        feats = [x]
        feats.append(e.layer1(e.maxpool(x)))
        for layer in (e.layer2, e.layer3, e.layer4):
            feats.append(layer(feats[-1]))
        return feats

    def decode(self, feats: Sequence[Tensor]) -> dict[int, Tensor]:
        """The sigmoid disparities ``{scale: (B, 1, h, w)}`` of the official ``DepthDecoder.forward``."""
        out = {}
        x = feats[-1]
        for n, i in enumerate(range(4, -1, -1)):
            x = F.interpolate(self.decoder[2 * n](x), scale_factor=2, mode="nearest")
            if i > 0:
                x = torch.cat([x, feats[i - 1]], dim=1)
            x = self.decoder[2 * n + 1](x)
            if i in self._disp_index:
                out[i] = torch.sigmoid(self.decoder[self._disp_index[i]](x))
        return out

    def forward(self, image: Tensor) -> list[Tensor]:
        if image.shape[1] != 3:
            raise ValueError(f"MonodepthDepthNet expects RGB images (B, 3, H, W), got shape {tuple(image.shape)}")
        disp = self.decode(self.encode(image))
        return [disp[s] for s in self.scales]

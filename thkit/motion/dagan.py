"""DaGAN's depth-aware keypoint detector (Hong et al., "Depth-Aware Generative Adversarial Network for Talking Head
Video Generation", CVPR 2022, sec. 3.2: "the RGB image and its depth map are concatenated to detect keypoints").

:class:`RGBDKeypointDetector` is FOMM's keypoint detector on 4 channels (RGB + the depth network's ``disp_0``); the
depth network is its own part (``depth=``, an ``encoder`` part such as
:class:`~thkit.encode.depth.MonodepthDepthNet`, whose weights come from their own file).  It returns the depth map
it used under ``'depth'`` beside the keypoints, so that a depth-aware part downstream
(:class:`~thkit.compensate.dagan.DepthAwareAttention`) reads the source depth from ``kp_source`` without running the
depth network a second time.
"""
from __future__ import annotations

from typing import Any

import torch

from thkit.builder import build
from thkit.motion.fomm import FOMMKeypointDetector
from thkit.registry import KEYPOINT_DETECTORS

Tensor = torch.Tensor


@KEYPOINT_DETECTORS.register_module()
class RGBDKeypointDetector(FOMMKeypointDetector):
    """FOMM's detector (same arguments and module names) on ``cat(image, depth(image)[0])``.

    Args:
        depth: the depth network (an ``encoder`` part returning maps fine to coarse; its first map, 1 channel at
            the image size, is the depth).
        in_channels: the channels the detector sees: image channels + 1 (DaGAN: 4).
        **kwargs: :class:`~thkit.motion.fomm.FOMMKeypointDetector`'s.

    Returns ``{'value', 'jacobian', 'depth': (B, 1, H, W)}``.
    """

    def __init__(self, depth: dict[str, Any], in_channels: int = 4, **kwargs: Any):
        super().__init__(in_channels=in_channels, **kwargs)
        self.depth = build("encoder", depth, "depth")
        self.image_channels = int(in_channels) - 1

    def depth_map(self, image: Tensor) -> Tensor:
        """The depth map (B, 1, H, W) the detector uses."""
        depth = self.depth(image)[0]
        if depth.shape[1] != 1 or tuple(depth.shape[2:]) != tuple(image.shape[2:]):
            raise ValueError(f"the depth network must return a (B, 1, H, W) map at the image size first; got "
                             f"{tuple(depth.shape)} for an image of {tuple(image.shape)}")
        return depth

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        if image.shape[1] != self.image_channels:
            raise ValueError(f"RGBDKeypointDetector expects {self.image_channels}-channel images (it adds the depth "
                             f"as channel {self.image_channels + 1}), got shape {tuple(image.shape)}")
        depth = self.depth_map(image)
        out = super().forward(torch.cat([image, depth], dim=1))
        out["depth"] = depth
        return out

"""First Order Motion Model (Siarohin et al., NeurIPS 2019): keypoint detector and dense motion.

Paper sections implemented here:

* sec. 3.1 / eq. (3)-(4): keypoints and local affine transformations (Jacobians) regressed from
  heatmaps (:class:`FOMMKeypointDetector`, :func:`spatial_softmax`, :func:`heatmap_to_keypoints`);
* sec. 3.2 / eq. (4)-(8): sparse motions ``T_{S<-D}``, heatmap representation ``H_k``, the deformed sources,
  the mask-weighted dense flow and the occlusion map (:class:`FirstOrderMotion`).

Conventions are those of :mod:`thkit.interfaces` (and of the official code, so converted checkpoints give
the same numbers): keypoints ``(x, y)`` in ``[-1, 1]`` on a grid whose endpoints are exactly +-1, flows in
``grid_sample`` coordinates.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.interfaces import KeypointDetector, MotionEstimator
from thkit.layers import AntiAliasInterpolation2d, Hourglass, kp2gaussian, make_coordinate_grid
from thkit.registry import KEYPOINT_DETECTORS, MOTION_ESTIMATORS
from thkit.warp.grid_sample import warp_by_each

Tensor = torch.Tensor

__all__ = [
    "spatial_softmax",
    "heatmap_to_keypoints",
    "FOMMKeypointDetector",
    "FirstOrderMotion",
    "sparse_motions",
    "heatmap_representation",
]


# ---------------------------------------------------------------------------------------------------------
# heatmap -> keypoints (reused by every detector of the FOMM family: SMAC, MCNet, ...)
# ---------------------------------------------------------------------------------------------------------
def spatial_softmax(logits: Tensor, temperature: float) -> Tensor:
    """Softmax over the flattened spatial positions of ``logits / temperature`` (FOMM sec. 3.1).

    ``logits`` is ``(B, K, h, w)``; the result has the same shape and sums to 1 over ``(h, w)``.
    """
    if logits.dim() != 4:
        raise ValueError(f"spatial_softmax expects (B, K, h, w) logits, got shape {tuple(logits.shape)}")
    b, k, h, w = logits.shape
    return F.softmax(logits.reshape(b, k, h * w) / temperature, dim=2).reshape(b, k, h, w)


def heatmap_to_keypoints(heatmap: Tensor, jacobian_map: Tensor | None = None) -> dict[str, Tensor]:
    """Keypoints as the expectation of a ``[-1, 1]`` grid under each heatmap (FOMM eq. 3 and sec. 3.1).

    The grid is laid on the heatmap *as given*: with FOMM's padding-0 7x7 head the heatmap is cropped to
    ``(h - 6, w - 6)`` and its corners still map to +-1 (official quirk: the keypoints live on the cropped map).

    ``jacobian_map`` (optional) is ``(B, 4 M, h, w)`` with ``M = K`` maps (one per keypoint) or ``M = 1``
    (shared); each Jacobian is the heatmap-weighted sum of its four maps, row-major ``[[j0, j1], [j2, j3]]``.

    Returns ``{'value': (B, K, 2)}`` plus ``'jacobian': (B, K, 2, 2)`` when a map is given.
    """
    b, k, h, w = heatmap.shape
    grid = make_coordinate_grid(h, w, dtype=heatmap.dtype, device=heatmap.device)
    value = (heatmap.unsqueeze(-1) * grid.view(1, 1, h, w, 2)).sum(dim=(2, 3))
    out = {"value": value}
    if jacobian_map is not None:
        if jacobian_map.shape[0] != b or tuple(jacobian_map.shape[2:]) != (h, w) or jacobian_map.shape[1] % 4:
            raise ValueError(
                f"jacobian_map must be (B, 4*M, {h}, {w}) matching the heatmap {tuple(heatmap.shape)}, "
                f"got {tuple(jacobian_map.shape)}")
        maps = jacobian_map.shape[1] // 4
        if maps not in (1, k):
            raise ValueError(f"jacobian_map has {maps} maps of 4 channels; expected 1 or {k} (one per keypoint)")
        jac = heatmap.unsqueeze(2) * jacobian_map.reshape(b, maps, 4, h, w)
        out["jacobian"] = jac.reshape(b, k, 4, h * w).sum(dim=-1).reshape(b, k, 2, 2)
    return out


def check_hourglass_fits(image_size: int | None, scale_factor: float, num_blocks: int) -> None:
    """A ValueError naming the smallest image size that works when an hourglass of ``num_blocks`` 2x poolings at
    ``scale_factor`` of the image (``image_size``, handed by the builder) would pool its input to nothing."""
    if image_size is None:
        return
    side = int(int(image_size) * float(scale_factor))
    if side >> int(num_blocks) < 1:
        smallest = math.ceil((1 << int(num_blocks)) / float(scale_factor))
        raise ValueError(f"image_size={image_size} px is too small for an hourglass of {num_blocks} blocks at scale "
                         f"{scale_factor:g} ({side} px pooled {num_blocks} times); use at least {smallest} px "
                         f"(or fewer num_blocks)")


@KEYPOINT_DETECTORS.register_module()
class FOMMKeypointDetector(KeypointDetector):
    """FOMM keypoint detector (sec. 3.1): anti-aliased downsampling, hourglass, 7x7 heads, soft-argmax.

    The heads are 7x7 convolutions with ``pad`` (official: 0, so the heatmap is cropped by 6 pixels);
    keypoints are the expectation of the ``[-1, 1]`` grid under ``softmax(logits / temperature)`` and the
    optional Jacobians (eq. 4's ``d/dp T``) are heatmap-weighted sums of 4 predicted maps per keypoint
    (or one shared set with ``single_jacobian_map``), initialised to the identity.

    Module names (``down``, ``predictor``, ``kp``, ``jacobian``) follow the official layout.

    Returns ``{'value': (B, K, 2), 'jacobian': (B, K, 2, 2)}`` (no ``jacobian`` without the head).
    """

    def __init__(self, num_kp: int = 10, in_channels: int = 3, block_expansion: int = 32, max_features: int = 1024,
                 num_blocks: int = 5, temperature: float = 0.1, estimate_jacobian: bool = True,
                 scale_factor: float = 0.25, single_jacobian_map: bool = False, pad: int = 0, norm: str = "batch",
                 image_size: int | None = None):
        super().__init__()
        check_hourglass_fits(image_size, scale_factor, num_blocks)
        if num_kp < 1:
            raise ValueError(f"num_kp must be >= 1, got {num_kp}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_kp = num_kp
        self.temperature = float(temperature)
        self.scale_factor = float(scale_factor)
        # no ``down`` module (and no ``down.weight`` key) at scale 1, as in the official layout
        self.down = AntiAliasInterpolation2d(in_channels, scale_factor) if scale_factor != 1 else None
        self.predictor = Hourglass(block_expansion, in_features=in_channels, num_blocks=num_blocks,
                                   max_features=max_features, norm=norm)
        width = self.predictor.out_filters
        self.kp = nn.Conv2d(width, num_kp, kernel_size=7, padding=pad)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(width, 4 * self.num_jacobian_maps, kernel_size=7, padding=pad)
            with torch.no_grad():  # identity Jacobians at init
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(self.num_jacobian_maps))
        else:
            self.num_jacobian_maps = 0
            self.jacobian = None

    def heatmap_logits(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(kp logits (B, K, h', w'), hourglass features)`` before the temperature softmax."""
        x = self.down(image) if self.down is not None else image
        features = self.predictor(x)
        return self.kp(features), features

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        logits, features = self.heatmap_logits(image)
        heatmap = spatial_softmax(logits, self.temperature)
        jacobian_map = self.jacobian(features) if self.jacobian is not None else None
        return heatmap_to_keypoints(heatmap, jacobian_map)


# ---------------------------------------------------------------------------------------------------------
# dense motion
# ---------------------------------------------------------------------------------------------------------
def heatmap_representation(kp_source: dict[str, Tensor], kp_driving: dict[str, Tensor], size: tuple[int, int],
                           kp_variance: float, gaussian_source: Tensor | None = None) -> Tensor:
    """``H_k(z) = G(z; kp_D^k) - G(z; kp_S^k)`` with a zero background channel first (FOMM eq. 6).

    ``gaussian_source`` is ``G(kp_S)`` when already computed (a source cache); it may have batch 1.
    Returns ``(B, K + 1, 1, h, w)``.
    """
    if gaussian_source is None:
        gaussian_source = kp2gaussian(kp_source["value"], size, kp_variance)
    heat = kp2gaussian(kp_driving["value"], size, kp_variance) - gaussian_source
    zeros = heat.new_zeros(heat.shape[0], 1, *size)
    return torch.cat([zeros, heat], dim=1).unsqueeze(2)


def sparse_motions(kp_source: dict[str, Tensor], kp_driving: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
    """First-order sparse motions ``T_{S<-D}^k(z) = kp_S^k + J_S^k (J_D^k)^-1 (z - kp_D^k)`` (FOMM eq. 4).

    Channel 0 is the identity grid (background).  Without Jacobians the motions are translations.
    Returns ``(B, K + 1, h, w, 2)`` in ``grid_sample`` coordinates.
    """
    value_s, value_d = kp_source["value"], kp_driving["value"]
    b, k, _ = value_d.shape
    h, w = size
    grid = make_coordinate_grid(h, w, dtype=value_s.dtype, device=value_s.device).view(1, 1, h, w, 2)
    rel = grid - value_d.view(b, k, 1, 1, 2)
    jac_d = kp_driving.get("jacobian")
    if jac_d is not None:
        jac_s = kp_source.get("jacobian")
        if jac_s is None:
            raise ValueError("kp_driving has a 'jacobian' but kp_source has none; both or neither are needed")
        jac = torch.matmul(jac_s, torch.inverse(jac_d))  # (B, K, 2, 2)
        rel = torch.einsum("bkij,bkhwj->bkhwi", jac, rel)
    motions = rel + value_s.view(value_s.shape[0], k, 1, 1, 2)
    identity = grid.expand(motions.shape[0], 1, h, w, 2)
    return torch.cat([identity, motions], dim=1)


@MOTION_ESTIMATORS.register_module()
class FirstOrderMotion(MotionEstimator):
    """FOMM dense motion network (sec. 3.2): sparse first-order motions blended by a predicted mask.

    Works at ``scale_factor`` times the image size: the anti-aliased source is warped by each of the
    ``K + 1`` sparse motions (eq. 4, background = identity), stacked with the heatmap representation
    (eq. 6) into ``(K + 1) * (C + 1)`` channels, passed through an hourglass, and a 7x7 conv + softmax over
    the ``K + 1`` channels gives the mask ``M_k`` that blends the motions into the dense flow (eq. 7).
    With ``estimate_occlusion_map`` a 7x7 conv + sigmoid gives the occlusion map (eq. 8).

    ``align_corners`` is the setting of the ``grid_sample`` call that deforms the source (official code on
    today's torch: ``False``; the released weights were trained on torch 1.0, which behaved as ``True``).

    Returns ``deformation`` (B, h, w, 2), ``occlusion_map`` (a list: ``[(B, 1, h, w)]``, or ``[]``),
    ``mask`` (B, K+1, h, w), ``sparse_deformed`` (B, K+1, C, h, w), ``sparse_motion`` (B, K+1, h, w, 2)
    and ``heatmap_representation`` (B, K+1, 1, h, w), and with an occlusion map ``occlusion_logits`` (B, 1, h, w),
    the occlusion before its sigmoid.  With ``return_driving_heatmap`` also
    ``driving_kp_heatmap`` (B, K, h, w): the driving keypoints' Gaussians ``G(kp_D^k)`` alone, which SMAC's
    motion codebook compensation uses in its queries (the official SMAC dense motion network's extra output).
    """

    def __init__(self, num_kp: int = 10, in_channels: int = 3, block_expansion: int = 64, max_features: int = 1024,
                 num_blocks: int = 5, scale_factor: float = 0.25, kp_variance: float = 0.01,
                 estimate_occlusion_map: bool = True, align_corners: bool = True, norm: str = "batch",
                 return_driving_heatmap: bool = False, image_size: int | None = None):
        super().__init__()
        check_hourglass_fits(image_size, scale_factor, num_blocks)
        self.num_kp = num_kp
        self.return_driving_heatmap = bool(return_driving_heatmap)
        self.kp_variance = float(kp_variance)
        self.scale_factor = float(scale_factor)
        self.align_corners = bool(align_corners)
        self.hourglass = Hourglass(block_expansion, in_features=(num_kp + 1) * (in_channels + 1),
                                   num_blocks=num_blocks, max_features=max_features, norm=norm)
        width = self.hourglass.out_filters
        self.mask = nn.Conv2d(width, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = nn.Conv2d(width, 1, kernel_size=7, padding=3) if estimate_occlusion_map else None
        self.down = AntiAliasInterpolation2d(in_channels, scale_factor) if scale_factor != 1 else None

    def extra_repr(self) -> str:
        return f"num_kp={self.num_kp}, kp_variance={self.kp_variance}, align_corners={self.align_corners}"

    def deform_sources(self, source: Tensor, motions: Tensor) -> Tensor:
        """The source warped by every sparse motion (FOMM eq. 5's ``S(T^k(z))``): (B, K+1, C, h, w)."""
        return warp_by_each(source, motions, self.align_corners)

    def prepare_source(self, source: Tensor, kp_source: dict[str, Tensor]) -> dict[str, Tensor]:
        """The source-only inputs of :meth:`forward`: the anti-aliased source at the motion resolution
        (``image``) and the source keypoints' Gaussians ``G(kp_S)`` (``gaussian``).  Streaming inference
        computes them once per video (``TalkingHeadModel.encode_source``)."""
        small = self.down(source) if self.down is not None else source
        return {"image": small, "gaussian": kp2gaussian(kp_source["value"], tuple(small.shape[2:]), self.kp_variance)}

    def forward(self, source: Tensor, kp_source: dict[str, Tensor], kp_driving: dict[str, Tensor],
                driving: Tensor | None = None, source_cache: dict[str, Tensor] | None = None) -> dict[str, Any]:
        if kp_driving["value"].shape[1] != self.num_kp:
            raise ValueError(f"expected {self.num_kp} keypoints, got {kp_driving['value'].shape[1]}")
        if source_cache is None:
            source_cache = self.prepare_source(source, kp_source)
        small, gaussian_source = source_cache["image"], source_cache["gaussian"]
        b = kp_driving["value"].shape[0]
        if small.shape[0] != b:  # a batch-1 source cache for a batch of driving frames (no copy)
            small = small.expand(b, *small.shape[1:])
        _, _, h, w = small.shape
        heat = heatmap_representation(kp_source, kp_driving, (h, w), self.kp_variance, gaussian_source)
        motions = sparse_motions(kp_source, kp_driving, (h, w))
        deformed = self.deform_sources(small, motions)
        x = torch.cat([heat, deformed], dim=2).reshape(b, -1, h, w)
        features = self.hourglass(x)
        mask = F.softmax(self.mask(features), dim=1)
        deformation = (mask.unsqueeze(-1) * motions).sum(dim=1)
        logits = self.occlusion(features) if self.occlusion is not None else None
        occlusion = [torch.sigmoid(logits)] if logits is not None else []
        out = {
            "deformation": deformation,
            "occlusion_map": occlusion,
            "mask": mask,
            "sparse_deformed": deformed,
            "sparse_motion": motions,
            "heatmap_representation": heat,
        }
        if logits is not None:  # before the sigmoid (MRFA's flow refinement accumulates occlusion logits)
            out["occlusion_logits"] = logits
        if self.return_driving_heatmap:
            out["driving_kp_heatmap"] = kp2gaussian(kp_driving["value"], (h, w), self.kp_variance)
        return out

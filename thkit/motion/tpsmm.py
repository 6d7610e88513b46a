"""Thin-Plate-Spline Motion Model (TPSMM, Zhao & Zhang, CVPR 2022): keypoints, TPS motion, background, AVD.

Parts registered here:

* :class:`TPSKeypointDetector` (``keypoint``): ResNet-18 -> fc -> ``2 sigmoid - 1`` gives ``K x 5`` points.
* :class:`ThinPlateSplineMotion` (``motion``): K thin-plate-spline transforms plus one background affine,
  blended by softmax contribution maps (paper eq. 6) into a dense flow, and multi-resolution occlusion
  masks (paper sec. 3.2).  Optionally holds the :class:`BackgroundMotionPredictor`.
* :class:`AVDNetwork` (``motion``, see its docstring): TPSMM's "animation via disentanglement" network, a
  keypoint-to-keypoint transfer MLP used in place of relative motion transfer.

The maths of the official code (yoyo-nb/Thin-Plate-Spline-Motion-Model @ c616878) is reproduced,
including its quirks (``(L + 0.01 I)`` TPS system, ``U = r^2 log(r^2 + 1e-9)``, ``align_corners=True``).
State-dict layouts follow the official module names so :mod:`thkit.convert.tpsmm` maps them one to one.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, make_blocks
from torch import nn

from thkit.interfaces import KeypointDetector, MotionEstimator
from thkit.layers import AntiAliasInterpolation2d, Hourglass, UpBlock2d, kp2gaussian, make_coordinate_grid
from thkit.registry import KEYPOINT_DETECTORS, MOTION_ESTIMATORS
from thkit.warp.grid_sample import warp_by_each

Tensor = torch.Tensor

#: points per thin-plate-spline transform (TPSMM fixes N = 5)
POINTS_PER_TPS = 5


# ---------------------------------------------------------------------------------------------------------
# ResNet-18 trunk (torchvision key layout)
# ---------------------------------------------------------------------------------------------------------
class ResNet18(nn.Module):
    """A ResNet-18 (BasicBlock x [2, 2, 2, 2]) with torchvision's forward and state-dict key names.

    The four stages are timm's (:func:`timm.models.resnet.make_blocks`, the same blocks and keys as
    torchvision); only the 7x7 stem and the head are written here, because neither torchvision's nor
    timm's ``ResNet`` lets the stem width follow ``stage_widths`` (the tiny parity fixture uses
    ``[4, 8, 16, 32]``; the official model ``[64, 128, 256, 512]``).  ``in_chans`` is 3 for the keypoint
    detector and 6 for the background predictor (source and driving concatenated).
    """

    def __init__(self, in_chans: int, num_outputs: int, stage_widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        widths = tuple(int(w) for w in stage_widths)
        if len(widths) != 4 or min(widths) <= 0:
            raise ValueError(f"stage_widths must be 4 positive ints (a ResNet-18 has 4 stages), got {stage_widths!r}")
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages, _ = make_blocks((BasicBlock,) * 4, widths, (2, 2, 2, 2), inplanes=widths[0],
                                norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
        for name, stage in stages:  # layer1 .. layer4
            self.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], num_outputs)
        for m in self.modules():  # torchvision's initialisation (no zero-init of the last BN)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------------------------------------
# keypoints
# ---------------------------------------------------------------------------------------------------------
@KEYPOINT_DETECTORS.register_module()
class TPSKeypointDetector(KeypointDetector):
    """TPSMM keypoint detector (paper sec. 3.1): ``num_tps`` groups of 5 control points from a ResNet-18.

    ``value = 2 sigmoid(fc(resnet18(image))) - 1``, shape ``(B, num_tps * 5, 2)``, ``(x, y)`` in
    ``(-1, 1)``; consecutive groups of 5 points define one TPS transform.  The image goes in as is (no
    ImageNet normalisation), at any size.  No Jacobians.  Official name of the output: ``fg_kp``.
    """

    def __init__(self, num_tps: int = 10, num_channels: int = 3, stage_widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        if num_tps < 1:
            raise ValueError(f"num_tps must be >= 1, got {num_tps}")
        self.num_tps = int(num_tps)
        self.num_kp = self.num_tps * POINTS_PER_TPS
        self.backbone = ResNet18(num_channels, self.num_kp * 2, stage_widths)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        if image.dim() != 4:
            raise ValueError(f"TPSKeypointDetector expects a (B, C, H, W) image, got shape {tuple(image.shape)}")
        out = torch.sigmoid(self.backbone(image)) * 2 - 1
        return {"value": out.view(image.shape[0], self.num_kp, 2)}


# ---------------------------------------------------------------------------------------------------------
# thin-plate splines
# ---------------------------------------------------------------------------------------------------------
def tps_radial(sq_dist: Tensor, eps: float = 1e-9) -> Tensor:
    """The TPS radial basis on squared distances: ``U = r^2 log(r^2 + eps)`` (TPSMM eq. 2, official form)."""
    return sq_dist * torch.log(sq_dist + eps)


class ThinPlateSpline:
    """A batch of 2-D thin-plate splines mapping ``control`` points onto ``target`` points (TPSMM eq. 2).

    ``T(z) = A [z; 1] + sum_i w_i U(|z - p_i|)`` with ``U = r^2 log(r^2 + 1e-9)``.  The coefficients solve
    ``(L + lambda I) [w; A] = [q; 0]`` with ``L = [[U(p_i, p_j), [p 1]], [[p 1]^T, 0]]`` built from the
    control points ``p`` (the *driving* keypoints in TPSMM, so ``T`` maps driving to source coordinates)
    and ``lambda = 0.01`` (official).

    Why not :func:`kornia.geometry.transform.get_tps_transform`: kornia solves the plain interpolation
    system (no ``lambda I`` term; its kernel is also scaled differently, which only matters once a
    regulariser is present).  The ``0.01 I`` term changes the warp (its affine block too), so kornia
    cannot reproduce the official flows; ``tests/test_tpsmm.py`` measures the gap.

    Args:
        control: ``(..., N, 2)`` control points ``p``.
        target: ``(..., N, 2)`` where each control point must go (``q``).
        regularisation: ``lambda``.
    """

    def __init__(self, control: Tensor, target: Tensor, regularisation: float = 0.01):
        if control.shape != target.shape or control.shape[-1] != 2:
            raise ValueError(
                f"control and target must both be (..., N, 2); got {tuple(control.shape)} and {tuple(target.shape)}")
        n = control.shape[-2]
        lead = control.shape[:-2]
        sq = ((control.unsqueeze(-2) - control.unsqueeze(-3)) ** 2).sum(-1)  # (..., N, N)
        ones = control.new_ones(*lead, n, 1)
        p1 = torch.cat([control, ones], dim=-1)  # (..., N, 3)
        top = torch.cat([tps_radial(sq), p1], dim=-1)
        bottom = torch.cat([p1.transpose(-1, -2), control.new_zeros(*lead, 3, 3)], dim=-1)
        system = torch.cat([top, bottom], dim=-2)
        system = system + regularisation * torch.eye(n + 3, dtype=control.dtype, device=control.device)
        rhs = torch.cat([target, control.new_zeros(*lead, 3, 2)], dim=-2)
        solution = torch.linalg.solve(system, rhs)  # (..., N + 3, 2)
        self.control = control
        self.weights = solution[..., :n, :]  # w: (..., N, 2)
        self.affine = solution[..., n:, :]  # rows: coefficients of x, of y, and the offset

    def warp_points(self, points: Tensor) -> Tensor:
        """Map ``points`` (``(M, 2)`` or ``(..., M, 2)`` broadcastable to the spline batch) -> ``(..., M, 2)``."""
        affine = points @ self.affine[..., :2, :] + self.affine[..., 2:, :]
        sq = ((points.unsqueeze(-2) - self.control.unsqueeze(-3)) ** 2).sum(-1)  # (..., M, N)
        return affine + tps_radial(sq) @ self.weights

    def warp_grid(self, height: int, width: int) -> Tensor:
        """The warped identity grid: ``(..., height, width, 2)`` in grid_sample coordinates."""
        grid = make_coordinate_grid(height, width, dtype=self.control.dtype, device=self.control.device)
        out = self.warp_points(grid.reshape(-1, 2))
        return out.reshape(*out.shape[:-2], height, width, 2)


def apply_affine_to_grid(grid: Tensor, affine: Tensor) -> Tensor:
    """Apply ``(B, 3, 3)`` homogeneous affines to an ``(h, w, 2)`` grid -> ``(B, h, w, 2)`` (de-homogenised)."""
    homo = torch.cat([grid, grid.new_ones(*grid.shape[:-1], 1)], dim=-1)  # (h, w, 3)
    out = torch.matmul(affine[:, None, None], homo.unsqueeze(-1)).squeeze(-1)  # (B, h, w, 3)
    return out[..., :2] / out[..., 2:3]


def dropout_softmax(logits: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """TPS dropout (TPSMM eq. 7-8): drop whole TPS contribution maps with probability ``p``, then normalise.

    Channel 0 (background) is always kept.  The mask is drawn per sample and channel and shared over
    space; the result is ``exp(x - max) * keep / (sum(exp(x - max) * keep) + 1e-6)``.  (The official code
    also divides the logits by ``1 - p`` *after* exponentiating them, which does not change its output,
    so it is not repeated here.)
    """
    keep = (torch.rand(logits.shape[:2], generator=generator, device=logits.device) < (1 - p)).to(logits.dtype)
    keep[:, 0] = 1
    e = torch.exp(logits - logits.max(dim=1, keepdim=True).values) * keep[:, :, None, None]
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


# ---------------------------------------------------------------------------------------------------------
# background motion
# ---------------------------------------------------------------------------------------------------------
class BackgroundMotionPredictor(nn.Module):
    """TPSMM background motion (paper sec. 3.1): one affine ``A_bg`` from ``cat(source, driving)``.

    A ResNet-18 with a 6-channel stem gives 6 numbers, the top two rows of a ``(B, 3, 3)`` matrix whose
    last row is ``[0, 0, 1]``.  The head starts at the identity (weight 0, bias ``[1, 0, 0, 0, 1, 0]``).
    It is a sub-part of :class:`ThinPlateSplineMotion` (built from its ``background_predictor`` dict).
    """

    def __init__(self, num_channels: int = 3, stage_widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        self.backbone = ResNet18(2 * num_channels, 6, stage_widths)
        nn.init.zeros_(self.backbone.fc.weight)
        with torch.no_grad():
            self.backbone.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source: Tensor, driving: Tensor) -> Tensor:
        if source.shape != driving.shape:
            raise ValueError(
                f"source {tuple(source.shape)} and driving {tuple(driving.shape)} must have the same shape")
        b = source.shape[0]
        rows = self.backbone(torch.cat([source, driving], dim=1)).view(b, 2, 3)
        last = torch.tensor([0.0, 0.0, 1.0], dtype=rows.dtype, device=rows.device).expand(b, 1, 3)
        return torch.cat([rows, last], dim=1)


# ---------------------------------------------------------------------------------------------------------
# dense motion
# ---------------------------------------------------------------------------------------------------------
@MOTION_ESTIMATORS.register_module()
class ThinPlateSplineMotion(MotionEstimator):
    """TPSMM dense motion network (paper sec. 3.1, eq. 6; multi-resolution occlusion, sec. 3.2).

    At ``scale_factor`` of the image size (anti-aliased, nearest subsampling):

    1. K = ``num_tps`` thin-plate splines, each fitted on 5 driving -> source point pairs
       (:class:`ThinPlateSpline`), plus a background transform: the identity, or the affine ``bg_param``
       (from ``bg_param=`` or, when a driving image is given and ``use_background`` is on, from the
       :class:`BackgroundMotionPredictor`).
    2. The source warped by each of the K + 1 transforms, and the heatmaps ``[0, G(kp_d) - G(kp_s)]``
       (one channel per point, variance ``kp_variance``) go through an InstanceNorm hourglass that returns
       every decoder level.
    3. ``contribution_maps`` = softmax over K + 1 of a 7x7 conv of the last level (TPS dropout, eq. 7-8,
       in training when ``dropout_p > 0``); ``deformation`` = sum of contributions x transforms (eq. 6).
    4. ``occlusion_map`` (``multi_mask``): 4 sigmoid masks, coarse to fine: 7x7 convs on the last
       ``4 - n_up`` hourglass levels, then ``n_up = log2(1 / scale_factor)`` UpBlocks (halving the width
       each time) on the last level, one mask after each, so the finest mask is at image size.  Without
       ``multi_mask``: one mask from the last level, and its logits as ``occlusion_logits`` (MRFA's TPS prior
       refines them).
    ``norm``: the hourglass's (and UpBlocks') normalisation, ``'instance'`` (TPSMM) or ``'batch'`` (MRFA's copy of
    this network).

    Returns ``deformation`` (B, h, w, 2), ``occlusion_map`` (list), ``contribution_maps`` (B, K+1, h, w),
    ``deformed_source`` (B, K+1, C, h, w) and, when used, ``bg_param`` (B, 3, 3).
    ``dropout_p`` is an attribute a training schedule may change (official: 0.1 -> 0.3, off from epoch 35);
    ``use_background`` likewise (official: from epoch 10).
    """

    def __init__(
        self,
        num_tps: int = 10,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 1024,
        num_blocks: int = 5,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        multi_mask: bool = True,
        tps_regularisation: float = 0.01,
        align_corners: bool = True,
        background_predictor: dict | None = None,
        use_background: bool = True,
        dropout_p: float = 0.0,
        norm: str = "instance",
    ):
        super().__init__()
        if num_tps < 1:
            raise ValueError(f"num_tps must be >= 1, got {num_tps}")
        if not 0 < scale_factor <= 1:
            raise ValueError(f"scale_factor must be in (0, 1], got {scale_factor}")
        self.num_tps = int(num_tps)
        self.num_channels = int(num_channels)
        self.scale_factor = float(scale_factor)
        self.kp_variance = float(kp_variance)
        self.tps_regularisation = float(tps_regularisation)
        self.align_corners = bool(align_corners)
        self.multi_mask = bool(multi_mask)
        self.use_background = bool(use_background)
        self.dropout_p = float(dropout_p)

        if self.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor, mode="nearest")
        in_features = num_channels * (self.num_tps + 1) + self.num_tps * POINTS_PER_TPS + 1
        self.hourglass = Hourglass(block_expansion, in_features, num_blocks, max_features, norm=norm)
        widths = list(self.hourglass.out_channels)  # after every decoder step, coarse to fine
        self.maps = nn.Conv2d(widths[-1], self.num_tps + 1, kernel_size=7, padding=3)

        if self.multi_mask:
            n_up = int(round(math.log2(1 / self.scale_factor)))
            if 2**n_up != round(1 / self.scale_factor):
                raise ValueError(f"multi_mask needs scale_factor = 1 / 2^n, got {scale_factor}")
            num_masks = 4
            n_levels = num_masks - n_up
            if n_levels < 0 or n_levels > len(widths):
                raise ValueError(
                    f"multi_mask with scale_factor {scale_factor} needs {n_levels} hourglass levels "
                    f"(num_blocks={num_blocks} gives {len(widths)})")
            ups = [widths[-1] // 2**i for i in range(n_up + 1)]
            self.up = nn.ModuleList(UpBlock2d(ups[i], ups[i + 1], norm=norm) for i in range(n_up))
            mask_in = widths[len(widths) - n_levels:] + ups[1:]
            self.num_hourglass_masks = n_levels
        else:
            self.up = nn.ModuleList()
            mask_in = [widths[-1]]
            self.num_hourglass_masks = 1
        self.occlusion = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=7, padding=3) for c in mask_in)

        if background_predictor is not None:
            bg_args = dict(background_predictor)
            bg_args.setdefault("num_channels", num_channels)
            self.bg_predictor = BackgroundMotionPredictor(**bg_args)
        else:
            self.bg_predictor = None

    def loss_inputs(self) -> dict[str, Any]:
        """``bg_predictor`` for the background cycle loss (:class:`~thkit.losses.tpsmm.BackgroundCycleLoss`
        runs it on the swapped frames), when there is one."""
        return {} if self.bg_predictor is None else {"bg_predictor": self.bg_predictor}

    # -- pieces (public for tests and visualisation) ------------------------------------------------------
    def downsample(self, image: Tensor) -> Tensor:
        return self.down(image) if self.scale_factor != 1 else image

    def heatmap_representation(self, size: tuple[int, int], kp_source: dict, kp_driving: dict,
                               gaussian_source: Tensor | None = None) -> Tensor:
        """``[0, G(kp_d) - G(kp_s)]``: (B, 1 + K*5, h, w) (``gaussian_source``: ``G(kp_s)`` if already known)."""
        if gaussian_source is None:
            gaussian_source = kp2gaussian(kp_source["value"], size, self.kp_variance)
        heat = kp2gaussian(kp_driving["value"], size, self.kp_variance) - gaussian_source
        return torch.cat([heat.new_zeros(heat.shape[0], 1, *size), heat], dim=1)

    def transformations(self, size: tuple[int, int], kp_source: dict, kp_driving: dict,
                        bg_param: Tensor | None = None) -> Tensor:
        """The K + 1 sampling grids (B, K+1, h, w, 2): background (channel 0), then the K splines."""
        h, w = size
        vd, vs = kp_driving["value"], kp_source["value"]
        b = vd.shape[0]
        want = (b, self.num_tps * POINTS_PER_TPS, 2)
        if tuple(vd.shape) != want or tuple(vs.shape) != want:
            raise ValueError(
                f"expected keypoints of shape {want} (num_tps={self.num_tps} x {POINTS_PER_TPS} points); "
                f"got driving {tuple(vd.shape)} and source {tuple(vs.shape)}")
        kp_d = vd.reshape(b, self.num_tps, POINTS_PER_TPS, 2)
        kp_s = vs.reshape(b, self.num_tps, POINTS_PER_TPS, 2)
        tps = ThinPlateSpline(kp_d, kp_s, self.tps_regularisation).warp_grid(h, w)  # (B, K, h, w, 2)
        grid = make_coordinate_grid(h, w, dtype=kp_d.dtype, device=kp_d.device)
        if bg_param is None:
            bg = grid.expand(b, h, w, 2)
        else:
            if tuple(bg_param.shape) != (b, 3, 3):
                raise ValueError(f"bg_param must be ({b}, 3, 3), got {tuple(bg_param.shape)}")
            bg = apply_affine_to_grid(grid, bg_param)
        return torch.cat([bg.unsqueeze(1), tps], dim=1)

    def deform_source(self, image: Tensor, transformations: Tensor) -> Tensor:
        """The (downsampled) source warped by each transform: (B, K+1, C, h, w)."""
        return warp_by_each(image, transformations, self.align_corners)

    def prepare_source(self, source: Tensor, kp_source: dict) -> dict[str, Tensor]:
        """The source-only inputs of :meth:`forward`: the downsampled source (``image``) and ``G(kp_s)``
        (``gaussian``); streaming inference computes them once per video."""
        image = self.downsample(source)
        return {"image": image, "gaussian": kp2gaussian(kp_source["value"], tuple(image.shape[2:]), self.kp_variance)}

    def forward(self, source: Tensor, kp_source: dict, kp_driving: dict, driving: Tensor | None = None,
                bg_param: Tensor | None = None, source_cache: dict[str, Tensor] | None = None) -> dict:
        if bg_param is None and driving is not None and self.use_background and self.bg_predictor is not None:
            bg_param = self.bg_predictor(source, driving)
        if source_cache is None:
            source_cache = self.prepare_source(source, kp_source)
        image = source_cache["image"]
        b = kp_driving["value"].shape[0]
        if image.shape[0] != b:  # a batch-1 source cache for a batch of driving frames (no copy)
            image = image.expand(b, *image.shape[1:])
        _, _, h, w = image.shape
        heat = self.heatmap_representation((h, w), kp_source, kp_driving, source_cache["gaussian"])
        trans = self.transformations((h, w), kp_source, kp_driving, bg_param)
        deformed = self.deform_source(image, trans)
        levels = self.hourglass(torch.cat([heat, deformed.reshape(b, -1, h, w)], dim=1), return_all=True)

        logits = self.maps(levels[-1])
        if self.training and self.dropout_p > 0:
            contribution = dropout_softmax(logits, self.dropout_p)
        else:
            contribution = F.softmax(logits, dim=1)
        deformation = (trans * contribution.unsqueeze(-1)).sum(dim=1)  # eq. 6

        occlusion, occ_logits = [], None
        n_hg = self.num_hourglass_masks
        for head, feat in zip(self.occlusion[:n_hg], levels[len(levels) - n_hg:]):
            occ_logits = head(feat)
            occlusion.append(torch.sigmoid(occ_logits))
        feat = levels[-1]
        for up, head in zip(self.up, self.occlusion[n_hg:]):
            feat = up(feat)
            occlusion.append(torch.sigmoid(head(feat)))

        out = {
            "deformation": deformation,
            "occlusion_map": occlusion,
            "contribution_maps": contribution,
            "deformed_source": deformed,
        }
        if not self.multi_mask:  # the single mask's logits (at the flow's size), for parts that refine them
            out["occlusion_logits"] = occ_logits
        if bg_param is not None:
            out["bg_param"] = bg_param
        return out


# ---------------------------------------------------------------------------------------------------------
# animation via disentanglement
# ---------------------------------------------------------------------------------------------------------
def _mlp(sizes: Sequence[int], inplace: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=inplace)]
    return nn.Sequential(*layers)


@MOTION_ESTIMATORS.register_module()
class AVDNetwork(MotionEstimator):
    """TPSMM "animation via disentanglement" (paper sec. 3.4): driving keypoints re-posed onto the source identity.

    Not a dense motion estimator: it maps keypoints to keypoints, replacing relative motion transfer
    (demo mode ``avd``).  It is registered with the motion estimators only because no keypoint-transfer
    kind exists; build it from a recipe's top-level ``avd_network`` entry, never as ``model.motion``.

    ``kp = decoder(cat(pose_encoder(kp_driving), id_encoder(kp_source)))``, with BatchNorm1d MLPs
    ``100 -> 256 -> 512 -> 1024 -> bottleneck`` (encoders) and ``id + pose -> 1024 -> 512 -> 256 -> 100``
    (decoder); ``hidden_widths`` = (256, 512, 1024) officially.
    """

    contract_outputs = ("value",)

    def __init__(self, num_tps: int = 10, id_bottle_size: int = 64, pose_bottle_size: int = 64,
                 hidden_widths: Sequence[int] = (256, 512, 1024)):
        super().__init__()
        self.num_tps = int(num_tps)
        n = self.num_tps * POINTS_PER_TPS * 2
        h = [int(x) for x in hidden_widths]
        self.id_encoder = _mlp([n, *h, id_bottle_size], inplace=True)
        self.pose_encoder = _mlp([n, *h, pose_bottle_size], inplace=True)
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, *reversed(h), n], inplace=False)

    def forward(self, kp_source: dict, kp_driving: dict) -> dict[str, Tensor]:
        b = kp_source["value"].shape[0]
        pose = self.pose_encoder(kp_driving["value"].reshape(b, -1))
        ident = self.id_encoder(kp_source["value"].reshape(b, -1))
        rec = self.decoder(torch.cat([pose, ident], dim=1))
        return {"value": rec.view(b, self.num_tps * POINTS_PER_TPS, 2)}

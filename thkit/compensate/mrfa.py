"""MRFA's motion refinement (Tao et al., "Learning Motion Refinement for Unsupervised Face Animation", NeurIPS 2023).

MRFA refines the flow of a *prior* motion model (FOMM's dense motion in the official configs; here: any ``motion``
part that returns ``deformation`` and an occlusion) coarse to fine, RAFT-style, from a structure correlation:

1. :class:`StructureCorrelation` (paper sec. 3.2, "structure correlation"): the driving keypoints' Gaussians
   (+ a learned position embedding) and the source keypoints' Gaussians with the downsampled source go through two
   hourglasses (``kp``, ``kp_img``) and 1x1 heads; the global correlation volume
   ``C[i, j] = <q_d[i], k_s[j]> / sqrt(dim)`` relates every driving position ``i`` to every source position ``j``
   at the prior's resolution.
2. :class:`CorrelationFlowUpdater` (sec. 3.3, "iterative refinement"): at each level a RAFT lookup of the volume
   around the current flow (2-level pyramid, radius 3), a motion encoder, the source feature of the level warped by
   the flow as context, and a head that predicts a residual flow and an occlusion-logit delta.
3. :class:`MotionRefinementCompensator`: the compensator part that runs them over the encoder levels coarse to
   fine, starting from the prior flow, and warps the raw features with the refined flows (``warps_features``).  It
   also warps them with the prior flow (the decoder fuses both) and gives the source warped by the finest flow.
   With ``prior_only`` (the official ``raft_flow.prior_only``) it only warps every level by the prior flow.

With the official TPS prior (``prior_model: tpsm``) the structure encoders see the mean of each 5-point group of
keypoints (``StructureCorrelation(kp_group_size=5)``).

Numerical conventions follow the official code (parity fixture README sec. 11, quirks 3-6): pixel flows with
``coords_grid`` ``[x, y]`` indices; sampling with ``align_corners=True`` on pixel coordinates normalised by
``(W - 1, H - 1)``; the lookup's slow window index moves x; levels coarser than the volume pool it over the driving
positions, finer ones look up at the volume's resolution and resize the result; every level restarts from the prior
flow resized to it plus all earlier residuals (upsampled x2 and doubled); the prior branch warps with
``grid_sample`` at ``prior_align_corners`` (official: the torch default, ``False``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.builder import build
from thkit.compensate.smac import FlowMotionEncoder, FlowRefinement
from thkit.interfaces import Compensator
from thkit.layers import AntiAliasInterpolation2d, Hourglass, kp2gaussian
from thkit.registry import COMPENSATORS

Tensor = torch.Tensor

__all__ = ["coords_grid", "pixel_sample", "correlation_lookup", "StructureCorrelation", "CorrelationFlowUpdater",
           "MotionRefinementCompensator"]


def coords_grid(batch: int, height: int, width: int, dtype=torch.float32, device=None) -> Tensor:
    """``(B, 2, H, W)`` pixel indices, channel 0 = x (column), channel 1 = y (row)."""
    y, x = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([x, y], dim=0).to(dtype)[None].repeat(batch, 1, 1, 1)


def pixel_sample(image: Tensor, coords: Tensor) -> Tensor:
    """``grid_sample`` at pixel coordinates ``coords`` (..., 2) = (x, y), normalised by (W - 1, H - 1),
    ``align_corners=True``, zero padding (RAFT's ``bilinear_sampler``)."""
    h, w = image.shape[-2:]
    x, y = coords.split([1, 1], dim=-1)
    grid = torch.cat([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], dim=-1)
    return F.grid_sample(image, grid, align_corners=True)


def _up(x: Tensor, size: int | None = None) -> Tensor:
    """Bilinear resize with ``align_corners=True`` (x2 without ``size``)."""
    if size is None:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


def correlation_lookup(volume: Tensor, coords: Tensor, levels: int = 2, radius: int = 3) -> Tensor:
    """RAFT's CorrBlock: sample ``(2 r + 1)^2`` neighbours per pyramid level around ``coords``.

    ``volume`` is ``(B h w, 1, H, W)``: for each of the ``h x w`` query positions a map over the ``H x W`` positions it
    is correlated with; ``coords`` ``(B, 2, h, w)`` are pixel positions in that map.  Level ``l`` average-pools the
    maps by ``2^l`` and halves the centres (the window offsets are not scaled).  Channel ``a (2r+1) + b`` samples
    ``(x + d_a, y + d_b)``.  Returns ``(B, levels (2r+1)^2, h, w)``.
    """
    b, _, h, w = coords.shape
    centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=coords.device, dtype=coords.dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    delta = torch.stack([dy, dx], dim=-1).view(1, 2 * radius + 1, 2 * radius + 1, 2)
    out, corr = [], volume
    for lvl in range(levels):
        if lvl:
            corr = F.avg_pool2d(corr, 2, stride=2)
        sampled = pixel_sample(corr, centres / 2**lvl + delta)
        out.append(sampled.view(b, h, w, -1))
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------------------
@COMPENSATORS.register_module()
class StructureCorrelation(nn.Module):
    """Structure encoders and the global correlation volume (MRFA sec. 3.2).

    A sub-part of :class:`MotionRefinementCompensator` (its ``structure`` entry).

    Args:
        num_kp: keypoints K.
        dim: width of the query / key features (vox1: 256); the volume is scaled by ``dim ** -0.5``.
        driving_encoder, source_encoder: :class:`~thkit.layers.Hourglass` arguments (``block_expansion``,
            ``num_blocks``, ``max_features``; ``in_features`` K and K + 3).  vox1: 32, 5, 512.
        image_size: image side (px); the volume lives at ``image_size * scale`` (the builder hands it).
        scale: the resolution of the volume relative to the image (the prior flow's: 0.25).
        kp_variance: variance of the keypoint Gaussians (official 0.1, not the dense motion's 0.01).
        in_channels: image channels (the source enters ``kp_img`` downsampled, anti-aliased: ``down``).
        kp_group_size: average every ``kp_group_size`` consecutive keypoints into one before the Gaussians
            (``num_kp`` counts the groups).  MRFA's TPS prior (``prior_model: tpsm``) feeds the mean of each
            5-point TPS group: ``kp.view(B, -1, 5, 2).mean(2)`` (``modules/model.py``, ``demo.py``).  Default 1.

    ``forward(source, kp_source, kp_driving)`` (keypoint values ``(B, K, 2)``) returns ``volume`` ``(B, N, N)``
    (index ``[b, i, j]``: driving position ``i``, source position ``j``, both row-major over the ``h x w`` grid),
    ``query`` (driving, ``(B, dim, h, w)``) and ``key`` (source).
    """

    def __init__(self, num_kp: int = 10, dim: int = 256, driving_encoder: dict | None = None,
                 source_encoder: dict | None = None, image_size: int = 256, scale: float = 0.25,
                 kp_variance: float = 0.1, in_channels: int = 3, kp_group_size: int = 1):
        super().__init__()
        if int(kp_group_size) < 1:
            raise ValueError(f"StructureCorrelation: kp_group_size must be >= 1, got {kp_group_size}")
        self.kp_group_size = int(kp_group_size)
        side = int(image_size * scale)
        if side < 2 or side != image_size * scale:
            raise ValueError(f"StructureCorrelation: image_size={image_size} x scale={scale} must be a whole number "
                             f">= 2 (the correlation grid side)")
        self.num_kp, self.dim, self.side = num_kp, dim, side
        self.scale = dim**-0.5
        self.kp_variance = float(kp_variance)
        enc_d = {**dict(block_expansion=32, num_blocks=5, max_features=512), **(driving_encoder or {})}
        enc_s = {**dict(block_expansion=32, num_blocks=5, max_features=512), **(source_encoder or {})}
        for name, enc, want in (("driving_encoder", enc_d, num_kp), ("source_encoder", enc_s, num_kp + in_channels)):
            if enc.setdefault("in_features", want) != want:
                raise ValueError(f"StructureCorrelation {name}.in_features is {enc['in_features']}; expected {want}")
            if side >> int(enc["num_blocks"]) < 1:
                raise ValueError(f"StructureCorrelation {name}: {enc['num_blocks']} blocks pool the {side} px grid "
                                 f"to nothing; use a larger image_size or fewer num_blocks")
        self.kp = Hourglass(**enc_d)
        self.kp_img = Hourglass(**enc_s)
        self.kp_head = nn.Conv2d(self.kp.out_filters, dim, 1)
        self.kp_img_head = nn.Conv2d(self.kp_img.out_filters, dim, 1)
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_kp, side, side))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.down = AntiAliasInterpolation2d(in_channels, scale, mode="nearest")

    def extra_repr(self) -> str:
        return f"num_kp={self.num_kp}, dim={self.dim}, side={self.side}, kp_group_size={self.kp_group_size}"

    def group_keypoints(self, kp: Tensor) -> Tensor:
        """``(B, num_kp * kp_group_size, 2)`` -> ``(B, num_kp, 2)``: the mean of each group of consecutive points."""
        want = self.num_kp * self.kp_group_size
        if kp.dim() != 3 or kp.shape[1] != want:
            raise ValueError(f"StructureCorrelation expects keypoints (B, {want}, 2) (num_kp={self.num_kp} x "
                             f"kp_group_size={self.kp_group_size}); got {tuple(kp.shape)}")
        if self.kp_group_size == 1:
            return kp
        return kp.reshape(kp.shape[0], self.num_kp, self.kp_group_size, 2).mean(2)

    def forward(self, source: Tensor, kp_source: Tensor, kp_driving: Tensor) -> dict[str, Tensor]:
        size = (self.side, self.side)
        kp_source, kp_driving = self.group_keypoints(kp_source), self.group_keypoints(kp_driving)
        g_s = kp2gaussian(kp_source, size, self.kp_variance) + self.pos_embedding
        g_d = kp2gaussian(kp_driving, size, self.kp_variance) + self.pos_embedding
        img = self.down(source)
        if source.shape[0] != g_d.shape[0]:
            img, g_s = img.expand(g_d.shape[0], *img.shape[1:]), g_s.expand(g_d.shape[0], *g_s.shape[1:])
        key = self.kp_img_head(self.kp_img(torch.cat([g_s, img], dim=1)))
        query = self.kp_head(self.kp(g_d))
        volume = torch.einsum("bic,bjc->bij", query.flatten(2).transpose(1, 2), key.flatten(2).transpose(1, 2))
        return {"volume": volume * self.scale, "query": query, "key": key}


@COMPENSATORS.register_module()
class CorrelationFlowUpdater(nn.Module):
    """One residual flow / occlusion update per level from a correlation lookup (MRFA sec. 3.3; RAFT's update).

    A sub-part of :class:`MotionRefinementCompensator` (its ``updater`` entry).  ``corr_enc`` encodes the lookup with
    the level's flow (:class:`~thkit.compensate.smac.FlowMotionEncoder`), ``to_context[i]`` projects the source
    feature of level ``i`` warped by the flow, ``refine`` (:class:`~thkit.compensate.smac.FlowRefinement`) predicts
    ``(d_flow (2, pixels), d_occlusion_logit (1))``.

    Args:
        feature_channels: source feature widths per level, coarse to fine (filled in by the compensator).
        radius, levels: lookup window radius and pyramid levels (3, 2).
        motion_width, feature_dims, flow_dims: motion encoder widths (128, (128, 96), (128, 64));
        context_dim, refine_width: context and refinement widths (192, 128).
    """

    def __init__(self, feature_channels: Sequence[int], radius: int = 3, levels: int = 2, motion_width: int = 128,
                 feature_dims: Sequence[int] = (128, 96), flow_dims: Sequence[int] = (128, 64), context_dim: int = 192,
                 refine_width: int = 128):
        super().__init__()
        self.radius, self.levels = int(radius), int(levels)
        self.feature_channels = [int(c) for c in feature_channels]
        self.corr_enc = FlowMotionEncoder(self.levels * (2 * self.radius + 1) ** 2, feature_dims, flow_dims,
                                          motion_width)
        self.refine = FlowRefinement(motion_width, context_dim, refine_width)
        self.to_context = nn.ModuleList(nn.Conv2d(c, context_dim, 1) for c in self.feature_channels)

    def lookup(self, volume: Tensor, coords: Tensor) -> Tensor:
        return correlation_lookup(volume, coords, self.levels, self.radius)

    def forward(self, index: int, flow: Tensor, corr: Tensor, feature: Tensor, grid: Tensor) -> dict[str, Tensor]:
        """``flow`` (B, 2, s, s) pixels, ``corr`` the lookup, ``feature`` the raw source feature of level
        ``index``, ``grid`` its :func:`coords_grid`.  Returns ``motion_feature``, ``context`` and ``delta``
        (B, 3, s, s)."""
        motion = self.corr_enc(flow, corr)
        context = F.relu(self.to_context[index](pixel_sample(feature, (flow + grid).permute(0, 2, 3, 1))))
        return {"motion_feature": motion, "context": context, "delta": self.refine(motion, context)}


def _occlusion_logits(motion: dict[str, Any], size: Sequence[int]) -> Tensor:
    """The prior's occlusion as logits at the flow's size: ``occlusion_logits`` when the motion part gives them
    (FOMM's), else the logit of its ``occlusion_map`` of that size (or the finest)."""
    if motion.get("occlusion_logits") is not None:
        return motion["occlusion_logits"]
    occ = motion.get("occlusion_map")
    if isinstance(occ, (list, tuple)):
        if not occ:
            occ = None
        else:
            same = [o for o in occ if tuple(o.shape[-2:]) == tuple(size)]
            occ = same[0] if same else occ[-1]
    if occ is None:
        raise ValueError("MotionRefinementCompensator needs an occlusion from the motion part ('occlusion_logits' "
                         "or a non-empty 'occlusion_map'); enable the motion part's occlusion estimate")
    return torch.logit(_up(occ, int(size[0])).clamp(1e-6, 1 - 1e-6))


@COMPENSATORS.register_module()
class MotionRefinementCompensator(Compensator):
    """MRFA's coarse-to-fine flow refinement after any prior motion estimator (sec. 3; ``RaftFlow`` officially).

    Works on the raw source features (``ctx['features']``, fine to coarse: the model's encoder levels, each twice the
    side of the next), the prior motion (``ctx['motion']``: ``deformation`` and occlusion, whose side must be one of the
    levels') and both keypoint sets.  Levels are processed coarse to fine; every level is refined.

    Args:
        channels: raw feature widths per level, coarse to fine (vox1: 512, 512, 512, 256, 128, 64).
        structure: :class:`StructureCorrelation` config (``num_kp``, ``dim``, encoders).
        updater: :class:`CorrelationFlowUpdater` config (``feature_channels`` filled in).
        prior_align_corners: the ``grid_sample`` setting of the prior branch (official: the default, ``False``).
        prior_only: the official ``raft_flow.prior_only`` (a plain prior-based model): no structure correlation
            and no updater are built (``structure`` / ``updater`` are not read); every level is warped by the
            prior flow resized to it (bilinear, ``align_corners=True``) with ``grid_sample`` at
            ``prior_align_corners``, the occlusions are ``sigmoid`` of the resized prior logits, and ``deformed``
            is the source warped by the prior flow resized to the finest level.  Use it with a decoder that does
            not fuse prior features (``MultiLevelFusionDecoder(fuse_prior=False)``).

    ``warps_features = True``.  Returns ``features`` (raw features warped by the refined flows, *not* multiplied by
    the occlusion, fine to coarse), ``prior_features`` (warped by the prior flow, fine to coarse), and coarse to fine:
    ``occlusion_list`` (refined, sigmoid), ``prior_occlusions``, ``flow_list`` (each level's input flow, pixels),
    ``refined_flows`` (after its update), ``deformation_list`` (the refined flows in ``grid_sample`` coordinates,
    (B, s, s, 2)); plus ``deformed`` (the source warped by the finest level's input flow, as the official code does)
    and ``init_flow`` (the prior flow in pixels).
    """

    warps_features = True

    def __init__(self, channels: Sequence[int], structure: dict | None = None, updater: dict | None = None,
                 prior_align_corners: bool = False, prior_only: bool = False):
        super().__init__()
        self.channels = [int(c) for c in channels]
        if len(self.channels) < 2:
            raise ValueError("MotionRefinementCompensator needs at least two levels (channels, coarse to fine)")
        self.prior_align_corners = bool(prior_align_corners)
        self.prior_only = bool(prior_only)
        if self.prior_only:
            self.structure = self.updater = None
            return
        self.structure = build("compensator", structure or dict(type="StructureCorrelation"), "structure")
        self.updater = build("compensator", updater or dict(type="CorrelationFlowUpdater"), "updater",
                             default_args={"feature_channels": self.channels})
        if list(self.updater.feature_channels) != self.channels:
            raise ValueError(f"updater.feature_channels {self.updater.feature_channels} differ from channels "
                             f"{self.channels}")

    def extra_repr(self) -> str:
        return f"channels={self.channels}, prior_align_corners={self.prior_align_corners}, prior_only={self.prior_only}"

    def forward(self, warped: Sequence[Tensor] | None, ctx: dict[str, Any]) -> dict[str, Any]:
        for key in ("features", "motion", "source", "kp_source", "kp_driving"):
            if key not in ctx:
                raise ValueError(f"MotionRefinementCompensator needs ctx[{key!r}] (built by TalkingHeadModel)")
        levels = list(ctx["features"])[::-1]
        got = [f.shape[1] for f in levels]
        if got != self.channels:
            raise ValueError(f"source feature widths (coarse to fine) {got} differ from channels={self.channels} (set "
                             f"the model's warp_levels / encoder out_indices to these levels)")
        sizes = [f.shape[-1] for f in levels]
        deformation = ctx["motion"]["deformation"]
        h = deformation.shape[1]
        if h not in sizes or deformation.shape[2] != h or any(b != 2 * a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"MotionRefinementCompensator needs square levels doubling in size {sizes} and a square "
                             f"prior flow of one of those sizes; got a {tuple(deformation.shape[1:3])} flow")
        if self.prior_only:
            return self._prior_only(levels, sizes, deformation, ctx)
        if h != self.structure.side:
            raise ValueError(f"the prior flow is {h}x{h} but the correlation grid is {self.structure.side}x"
                             f"{self.structure.side} (structure image_size x scale)")
        basic = sizes.index(h)
        source = ctx["source"]
        b = deformation.shape[0]
        init_occ = _occlusion_logits(ctx["motion"], (h, h))
        corr = self.structure(source, ctx["kp_source"]["value"], ctx["kp_driving"]["value"])["volume"]
        dtype, device = deformation.dtype, deformation.device
        init_flow = (h - 1) * (deformation.permute(0, 3, 1, 2) + 1) / 2.0 - coords_grid(b, h, h, dtype, device)
        # (B*N_source, 1, h, w) maps over the driving positions, for pooling them at the coarser levels
        volume = corr.transpose(1, 2).reshape(b * h * h, 1, h, h)

        flow = _up(init_flow, sizes[0]) / (h / sizes[0])
        occlusion = _up(init_occ, sizes[0])
        out: dict[str, Any] = {k: [] for k in ("flow_list", "refined_flows", "occlusion_list", "deformation_list",
                                               "prior_occlusions", "residual_flows")}
        warped_levels, prior_levels = [], []
        acc_flow = acc_occ = None
        grid = None
        for i, (feat, s) in enumerate(zip(levels, sizes)):
            grid = coords_grid(b, s, s, dtype, device)
            if i < basic:
                k = 2 ** (basic - i)
                vol = F.avg_pool2d(volume, k, stride=k)
                coords = (flow + grid) * k
            elif i == basic:
                vol, coords = volume, flow + grid
            else:
                vol = volume
                coords = _up(flow, h) * 0.5 ** (i - basic) + coords_grid(b, h, h, dtype, device)
            # (B*N_source, 1, s', s') -> one map over the source positions per driving position
            n = vol.shape[-1] * vol.shape[-2]
            vol = vol.reshape(b, h * h, n).transpose(1, 2).reshape(b * n, 1, h, h)
            lookup = self.updater.lookup(vol, coords)
            if i > basic:
                lookup = _up(lookup, s)
            step = self.updater(i, flow, lookup, feat, grid)
            delta = step["delta"]
            refined = flow + delta[:, 0:2]
            occlusion = occlusion + delta[:, 2:]
            out["flow_list"].append(flow)
            out["refined_flows"].append(refined)
            out["residual_flows"].append(delta[:, 0:2])
            occ = torch.sigmoid(occlusion)
            out["occlusion_list"].append(occ)
            coords_refined = (refined + grid).permute(0, 2, 3, 1)
            warped_levels.append(pixel_sample(feat, coords_refined))
            out["deformation_list"].append(torch.cat([2 * coords_refined[..., :1] / (s - 1) - 1,
                                                      2 * coords_refined[..., 1:] / (s - 1) - 1], dim=-1))
            # the prior ("coarse") branch
            prior_flow = deformation if s == h else _up(deformation.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
            prior_levels.append(F.grid_sample(feat, prior_flow, align_corners=self.prior_align_corners))
            out["prior_occlusions"].append(torch.sigmoid(_up(init_occ, s)))
            if i < len(levels) - 1:  # the next level: prior flow resized + every residual so far, x2 per level
                nxt = sizes[i + 1]
                d_f = _up(delta[:, 0:2]) * 2
                flow = d_f + _up(init_flow, nxt) / (2 ** (basic - i) / 2.0)
                d_o = _up(delta[:, 2:])
                occlusion = d_o + _up(init_occ, nxt)
                if acc_flow is None:
                    acc_flow, acc_occ = d_f, d_o
                else:
                    flow = flow + _up(acc_flow) * 2
                    acc_flow = d_f + _up(acc_flow) * 2
                    occlusion = occlusion + _up(acc_occ)
                    acc_occ = d_o + _up(acc_occ)
        out["deformed"] = pixel_sample(source.expand(b, *source.shape[1:]), (flow + grid).permute(0, 2, 3, 1))
        out["features"] = warped_levels[::-1]
        out["prior_features"] = prior_levels[::-1]
        out["init_flow"] = init_flow
        return out

    def _prior_flow(self, deformation: Tensor, size: int) -> Tensor:
        """The prior flow resized to ``size`` (bilinear, ``align_corners=True``), ``(B, size, size, 2)``."""
        if deformation.shape[1] == size:
            return deformation
        return _up(deformation.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)

    def _prior_only(self, levels: list[Tensor], sizes: list[int], deformation: Tensor,
                    ctx: dict[str, Any]) -> dict[str, Any]:
        """``RaftFlow.forward``'s ``prior_only`` branch: every level warped by the prior flow, no refinement."""
        init_occ = _occlusion_logits(ctx["motion"], tuple(deformation.shape[1:3]))
        warped, occlusions, flows = [], [], []
        for feat, s in zip(levels, sizes):
            flows.append(self._prior_flow(deformation, s))
            warped.append(F.grid_sample(feat, flows[-1], align_corners=self.prior_align_corners))
            occlusions.append(torch.sigmoid(_up(init_occ, s)))
        source = ctx["source"]
        source = source.expand(deformation.shape[0], *source.shape[1:])
        finest = flows[-1] if source.shape[-1] == sizes[-1] else self._prior_flow(deformation, source.shape[-1])
        return {"features": warped[::-1], "occlusion_list": occlusions, "prior_occlusions": occlusions,
                "deformation_list": flows,
                "deformed": F.grid_sample(source, finest, align_corners=self.prior_align_corners)}

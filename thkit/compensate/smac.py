"""SMAC's multi-scale codebook compensation: motion (MCC) and appearance (ACC) (Zhao et al., CVPR 2025).

Paper sec. 3.2-3.3 (Fig. 2-3).  At every scale ``s`` of the decoder, coarse to fine:

1. **MCC** (:class:`MotionCodebookCompensation`) refines the flow and the occlusion map.  The current
   residual flow ``M_{s-1} - id`` (pixels of the flow grid) is encoded to tokens; a query is built from
   them, the source feature of the scale warped by ``M_{s-1}`` and the driving keypoint heatmaps; the
   retrieval transformer (shared by all scales) attends to itself and to the scale's share of the motion
   codebook; an MRFA-style head (motion encoder + context of the warped feature + refinement) predicts a
   residual flow and an occlusion-logit delta: ``M_s = M_{s-1} + dM``, ``O_s = sigmoid(O_{s-1} + dO)``.
2. The source feature of the scale is warped by ``M_s`` and multiplied by ``O_s``.
3. **ACC** (:class:`AppearanceCodebookCompensation`) cuts that feature into ``p x p`` windows (``p`` grows
   with the resolution so every scale has the same token grid), projects each to the code width, runs the
   appearance retrieval transformer (shared by all scales; self-attention masked where the flow leaves the
   image, first layer only) against the scale's share of the appearance codebook, and projects back.

:class:`MultiScaleCodebookCompensator` composes them: it is the ``compensator`` part of
:class:`~thkit.models.talking_head.TalkingHeadModel`, its output features feed the decoder's multi-scale
fusion (:class:`~thkit.decode.vqgan.VQGANDecoder`).  Which scales get which compensation and how codes are
allocated are recipe choices (``motion_scales``, ``appearance_scales``, ``allocation``); no per-scale flags.

Training-only outputs (in training mode): the motion VQ of each step's flow tokens with the flow decoded back
from the codes (flow-reconstruction loss), and the appearance VQ of the *driving* frame's features
encoded by the same encoder (``ctx['encoder']``) for the appearance codebook loss.

Numerical conventions follow the official code (fixture quirks 9-13): the flow-unit grid is built with
``linspace``; the occlusion is squashed again at every step; the appearance key-padding mask is applied in
the first layer only; the codebook shares are those of :mod:`thkit.codebook.allocation`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.builder import build
from thkit.compensate.retrieval import RetrievalTransformer
from thkit.interfaces import Compensator, allocation_codes
from thkit.layers.blocks import shortcut
from thkit.layers.resize import bilinear_reads, bilinear_weights, resize_from_reads
from thkit.layers.vqgan import VQDownsample, VQResBlock, VQUpsample, group_norm
from thkit.layers.window import WindowEmbedding, WindowUnembedding
from thkit.registry import COMPENSATORS

Tensor = torch.Tensor

__all__ = [
    "linspace_grid",
    "FlowMotionEncoder",
    "FlowRefinement",
    "MotionCodebookCompensation",
    "AppearanceCodebookCompensation",
    "MultiScaleCodebookCompensator",
]


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with ``align_corners=True`` (SMAC's convention for features, flows and heatmaps)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def linspace_grid(height: int, width: int, dtype=torch.float32, device=None) -> Tensor:
    """(H, W, 2) identity grid ``(x, y)`` from ``torch.linspace(-1, 1, n)`` (SMAC's flow-unit grid, quirk 13;
    it can differ from :func:`~thkit.layers.make_coordinate_grid` in the last bit)."""
    x = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    y = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def _code_vectors(codebook, sel) -> Tensor:
    """The selected code vectors; detached when autograd is off (a view of a parameter made under ``no_grad`` /
    ``inference_mode`` requires grad but has no grad_fn, which trips torch's module tracker, e.g. in
    :class:`~torch.utils.flop_counter.FlopCounterMode`)."""
    codes = codebook.codes(sel)
    return codes if torch.is_grad_enabled() else codes.detach()


def _with_image_size(transformer: dict | None, image_size: int) -> dict[str, Any]:
    """The transformer's arguments with ``image_size`` filled in unless they set it."""
    cfg = dict(transformer or {})
    cfg.setdefault("image_size", image_size)
    return cfg


def _token_grid(size: Sequence[int]) -> tuple[int, int]:
    """Spatial size after :class:`~thkit.layers.vqgan.VQDownsample` (pad 1 right/bottom, 3x3 stride 2)."""
    return tuple((int(n) - 2) // 2 + 1 for n in size)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# MRFA-style flow update head (Teed & Deng's RAFT motion encoder as adapted by MRFA and SMAC)
# ---------------------------------------------------------------------------------------------------------
class FlowMotionEncoder(nn.Module):
    """Encode the current flow with the retrieved motion feature (RAFT/MRFA ``BasicMotionEncoder``).

    ``feature`` -> 1x1 conv -> ReLU -> 3x3 conv -> ReLU (``convc1``, ``convc2``); ``flow`` (2 channels, pixels)
    -> 7x7 conv -> ReLU -> 3x3 conv -> ReLU (``convf1``, ``convf2``); concatenated -> 3x3 conv -> ReLU
    (``conv``, ``width - 2`` channels) and the flow appended: ``width`` channels out.  SMAC widths:
    ``feature_dims = (128, 96)``, ``flow_dims = (128, 64)``, ``width = 128``.
    """

    def __init__(self, in_channels: int, feature_dims: Sequence[int] = (128, 96), flow_dims: Sequence[int] = (128, 64),
                 width: int = 128):
        super().__init__()
        c1, c2 = feature_dims
        f1, f2 = flow_dims
        self.convc1 = nn.Conv2d(in_channels, c1, 1)
        self.convc2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.convf1 = nn.Conv2d(2, f1, 7, padding=3)
        self.convf2 = nn.Conv2d(f1, f2, 3, padding=1)
        self.conv = nn.Conv2d(c2 + f2, width - 2, 3, padding=1)
        self.out_channels = width

    def forward(self, flow: Tensor, feature: Tensor) -> Tensor:
        c = F.relu(self.convc2(F.relu(self.convc1(feature))))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([c, f], dim=1))), flow], dim=1)


class FlowRefinement(nn.Module):
    """Residual flow and occlusion-logit delta from the motion encoding and a context feature (MRFA ``RefineFlow``).

    ``context`` -> 3x3 conv -> ReLU (``convc1``); ``[motion, context]`` -> 3x3 conv -> ReLU -> 3x3 conv to 2
    (``conv1``, ``conv2``: the flow residual, pixels) and in parallel to 1 (``convo1``, ``convo2``: the
    occlusion logit delta).  Returns ``(B, 3, h, w)``.
    """

    def __init__(self, motion_channels: int = 128, context_channels: int = 192, width: int = 128):
        super().__init__()
        self.convc1 = nn.Conv2d(context_channels, width, 3, padding=1)
        self.conv1 = nn.Conv2d(motion_channels + width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2, 3, padding=1)
        self.convo1 = nn.Conv2d(motion_channels + width, width, 3, padding=1)
        self.convo2 = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, motion: Tensor, context: Tensor) -> Tensor:
        x = torch.cat([motion, F.relu(self.convc1(context))], dim=1)
        return torch.cat([self.conv2(F.relu(self.conv1(x))), self.convo2(F.relu(self.convo1(x)))], dim=1)


# ---------------------------------------------------------------------------------------------------------
# MCC
# ---------------------------------------------------------------------------------------------------------
@COMPENSATORS.register_module()
class MotionCodebookCompensation(nn.Module):
    """Motion codebook compensation (SMAC sec. 3.2): one flow/occlusion refinement step per scale.

    A sub-part of :class:`MultiScaleCodebookCompensator` (built from its ``motion`` entry); every module is
    shared by all scales except the two per-scale projections of the source feature (``feature_proj[i]``
    for the query, ``context_proj[i]`` for the update head), ordered coarse to fine.

    Args:
        feature_channels: widths of the source features of the scales served, coarse to fine (filled in by
            the compensator).
        num_kp: keypoints (channels of the driving heatmaps).
        dim: token / code width (SMAC 32).
        codebook: ``codebook`` part config (SMAC: ``VectorQuantizer`` 1024 x 32, beta 0.25).
        allocation: ``allocation`` part config: the codes scale ``i`` of ``len(feature_channels)`` may use
            (SMAC: ``progressive``).
        transformer: :class:`~thkit.compensate.retrieval.RetrievalTransformer` arguments (SMAC: 2 layers,
            8 heads; the token grid follows ``image_size``: 32 x 32 at 256 px).
        image_size: the image side (px), handed to the transformer unless it sets its own (the builder fills
            in the recipe's ``image_size``).
        norm_groups: GroupNorm groups of the flow encoder / decoder.
        motion_width, feature_dims, flow_dims: :class:`FlowMotionEncoder` widths; context_dim, refine_width:
            :class:`FlowRefinement` widths (SMAC 128, (128, 96), (128, 64), 192, 128).

    ``forward(index, flow, occlusion, feature, kp_tokens, warper, quantize=False)`` runs the step of scale
    ``index``; :meth:`encode_keypoints` prepares ``kp_tokens`` once per frame.
    """

    def __init__(self, feature_channels: Sequence[int], num_kp: int, dim: int = 32, codebook: dict | None = None,
                 allocation: dict | None = None, transformer: dict | None = None, norm_groups: int = 32,
                 motion_width: int = 128, feature_dims: Sequence[int] = (128, 96), flow_dims: Sequence[int] = (128, 64),
                 context_dim: int = 192, refine_width: int = 128, image_size: int = 256):
        super().__init__()
        self.feature_channels = [int(c) for c in feature_channels]
        if not self.feature_channels:
            raise ValueError("MotionCodebookCompensation needs at least one scale (feature_channels)")
        self.dim = dim
        self.num_scales = len(self.feature_channels)
        self.codebook = build("codebook", codebook or dict(type="VectorQuantizer", num_codes=1024, dim=dim), "codebook")
        if self.codebook.dim != dim:
            raise ValueError(f"motion codebook width {self.codebook.dim} differs from dim={dim}")
        self.allocation = build("allocation", allocation or dict(type="progressive"), "allocation")
        for i in range(self.num_scales):  # fail at build time, not in the first forward
            self.allocation.indices(i, self.num_scales, self.codebook.num_codes)
        self.transformer = RetrievalTransformer(dim, **_with_image_size(transformer, image_size))
        # flow (2 ch, pixels) -> tokens at half the flow resolution; tokens -> flow (training only)
        self.flow_encoder = nn.Sequential(nn.Conv2d(2, dim, 3, padding=1), VQDownsample(dim),
                                          VQResBlock(dim, dim, norm_groups))
        self.flow_decoder = nn.Sequential(VQUpsample(dim), VQResBlock(dim, dim, norm_groups),
                                          group_norm(dim, norm_groups), nn.Conv2d(dim, 2, 3, padding=1))
        # query: [warped source feature, driving keypoints] -> dim, then mixed with the flow tokens
        self.kp_proj = nn.Conv2d(num_kp, dim, 1)
        self.feature_proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in self.feature_channels)
        self.query_mix = nn.Conv2d(2 * dim, dim, 1)
        self.token_mix = nn.Conv2d(2 * dim, dim, 1)
        # update head
        self.motion_encoder = FlowMotionEncoder(dim, feature_dims, flow_dims, motion_width)
        self.context_proj = nn.ModuleList(nn.Conv2d(c, context_dim, 1) for c in self.feature_channels)
        self.refine = FlowRefinement(motion_width, context_dim, refine_width)
        self._plans: dict = {}  # _read_plan's, by feature size, grid, flow size, dtype and device

    def codes(self, index: int):
        """The code selection of scale ``index`` (a slice for the built-in allocations)."""
        return allocation_codes(self.allocation, index, self.num_scales, self.codebook.num_codes)

    def _read_plan(self, size: tuple[int, int], grid: Sequence[int], flow_size: Sequence[int], warper,
                   like: Tensor):
        """Where the warped feature of ``size`` is read by its resizes to ``grid`` and ``flow_size`` (rows, columns
        and both resizes' weights there, :mod:`thkit.layers.resize`), when computing only those pixels is an exact
        inference shortcut that pays (``warp_reads``: autograd off, a warper with ``warp_at``, the resizes reading
        fewer than half the pixels); else ``None``."""
        if not (shortcut("warp_reads") and hasattr(warper, "warp_at")):
            return None
        if size[0] <= flow_size[0] or size[1] <= flow_size[1]:
            return None
        key = (size, tuple(grid), tuple(flow_size), like.dtype, like.device)
        plan = self._plans.get(key)
        if plan is None:
            axes = [sorted(set(bilinear_reads(n, g)) | set(bilinear_reads(n, f)))
                    for n, g, f in zip(size, grid, flow_size)]
            if len(axes[0]) * len(axes[1]) * 2 > size[0] * size[1]:
                plan = False  # reads half the pixels or more: the whole warp is as cheap
            else:
                def weights(target):
                    return tuple(bilinear_weights(n, t, a, like.dtype, like.device)
                                 for n, t, a in zip(size, target, axes))

                idx = [torch.tensor(a, dtype=torch.long, device=like.device) for a in axes]
                plan = (idx[0], idx[1], weights(grid), weights(flow_size))
            self._plans[key] = plan
        return plan or None

    def encode_keypoints(self, heatmap: Tensor, flow_size: Sequence[int]) -> Tensor:
        """``relu(kp_proj(heatmaps resized to the token grid))`` for flows of ``flow_size`` (once per frame)."""
        if heatmap.shape[1] != self.kp_proj.in_channels:
            raise ValueError(f"driving_kp_heatmap has {heatmap.shape[1]} channels, expected num_kp="
                             f"{self.kp_proj.in_channels}")
        return F.relu(self.kp_proj(_resize(heatmap, _token_grid(flow_size))))

    def forward(self, index: int, flow: Tensor, occlusion: Tensor, feature: Tensor, kp_tokens: Tensor, warper,
                quantize: bool = False) -> dict[str, Any]:
        """One MCC step at scale ``index`` (0 = coarsest served).

        ``flow`` (B, h, w, 2) grid_sample coordinates and ``occlusion`` (B, 1, h', w') in [0, 1] are the current
        estimates; ``feature`` is the raw source feature of the scale.  Returns ``deformation`` and
        ``occlusion`` (refined), ``residual`` (grid units) and, with ``quantize``, ``vq`` (the codebook's output
        for the flow tokens) and ``reconstruction`` (the flow decoded from the codes, pixels, (B, h, w, 2)).
        """
        if not isinstance(occlusion, Tensor):
            n = len(occlusion) if hasattr(occlusion, "__len__") else "?"
            raise ValueError(f"MCC refines one occlusion map; the motion estimator must predict exactly one (got {n})")
        b, h, w, _ = flow.shape
        to_pixel = flow.new_tensor([(w - 1) / 2.0, (h - 1) / 2.0])
        rel = ((flow - linspace_grid(h, w, flow.dtype, flow.device)) * to_pixel).permute(0, 3, 1, 2)

        flow_tokens = self.flow_encoder(rel.detach())
        grid = tuple(flow_tokens.shape[-2:])
        if tuple(kp_tokens.shape[-2:]) != grid:
            raise ValueError(f"kp_tokens are {tuple(kp_tokens.shape[-2:])} but the flow tokens are {grid}")
        # the source feature warped by the current flow (no occlusion), read only through two bilinear resizes: to
        # the token grid (query) and, projected, to the flow's size (context)
        plan = self._read_plan(tuple(feature.shape[-2:]), grid, (h, w), warper, feature)
        if plan is None:
            prev = warper(feature, flow, None)
            pooled = _resize(prev, grid)
        else:  # only where the two resizes read (exact to float rounding): at 256 px 160 of 256 rows and columns
            rows, cols, grid_weights, flow_weights = plan
            prev = warper.warp_at(feature, flow, rows, cols)
            pooled = resize_from_reads(prev, *grid_weights)
        query = F.relu(self.feature_proj[index](pooled))
        query = self.query_mix(torch.cat([query, kp_tokens], dim=1))
        tokens = self.token_mix(torch.cat([flow_tokens, query], dim=1))

        sel = self.codes(index)
        retrieved = self.transformer(tokens, _code_vectors(self.codebook, sel))

        motion = self.motion_encoder(rel, _resize(retrieved, (h, w)))
        context = F.relu(self.context_proj[index](prev))
        context = _resize(context, (h, w)) if plan is None else resize_from_reads(context, *flow_weights)
        delta = self.refine(motion, context)
        residual = delta[:, :2].permute(0, 2, 3, 1) / to_pixel
        out = {
            "deformation": flow + residual,
            "occlusion": torch.sigmoid(_resize(occlusion, (h, w)) + delta[:, 2:3]),
            "residual": residual,
        }
        if quantize:
            vq = self.codebook(flow_tokens, codes=sel)
            out["vq"] = vq
            out["reconstruction"] = self.flow_decoder(vq["quantized"]).permute(0, 2, 3, 1)
        return out


# ---------------------------------------------------------------------------------------------------------
# ACC
# ---------------------------------------------------------------------------------------------------------
@COMPENSATORS.register_module()
class AppearanceCodebookCompensation(nn.Module):
    """Appearance codebook compensation (SMAC sec. 3.3): window tokens -> retrieval transformer -> windows.

    A sub-part of :class:`MultiScaleCodebookCompensator` (its ``appearance`` entry).  The transformer and the
    codebook are shared by every scale; each scale has its own window embedding / unembedding
    (``embed[i]``, ``unembed[i]``, coarse to fine) with window size ``patch_sizes[i]``, chosen so that all
    scales give the same token grid (SMAC: 1, 2, 4, 8 at 32..256 px: 32 x 32 tokens).

    Args:
        feature_channels: widths of the features of the scales served, coarse to fine (filled in by the
            compensator).
        patch_sizes: window size per scale, coarse to fine (filled in by the compensator).
        dim: token / code width (SMAC 256).
        codebook, allocation, transformer, image_size: as :class:`MotionCodebookCompensation` (SMAC: 1024 x 256
            codes, progressive, 2 layers x 8 heads).
        mask_outside: build the self-attention key-padding mask from the flow: tokens whose flow (resized to
            the token grid) points outside ``[-1, 1]`` are not attended to (SMAC: yes; the transformer's
            ``masked_layers`` says in which layers, SMAC the first only).
    """

    def __init__(self, feature_channels: Sequence[int], patch_sizes: Sequence[int], dim: int = 256,
                 codebook: dict | None = None, allocation: dict | None = None, transformer: dict | None = None,
                 mask_outside: bool = True, image_size: int = 256):
        super().__init__()
        self.feature_channels = [int(c) for c in feature_channels]
        self.patch_sizes = [int(p) for p in patch_sizes]
        if not self.feature_channels or len(self.patch_sizes) != len(self.feature_channels):
            raise ValueError(f"AppearanceCodebookCompensation needs one patch size per scale: feature_channels "
                             f"{self.feature_channels}, patch_sizes {self.patch_sizes}")
        self.dim = dim
        self.num_scales = len(self.feature_channels)
        self.mask_outside = bool(mask_outside)
        self.codebook = build("codebook", codebook or dict(type="VectorQuantizer", num_codes=1024, dim=dim), "codebook")
        if self.codebook.dim != dim:
            raise ValueError(f"appearance codebook width {self.codebook.dim} differs from dim={dim}")
        self.allocation = build("allocation", allocation or dict(type="progressive"), "allocation")
        for i in range(self.num_scales):
            self.allocation.indices(i, self.num_scales, self.codebook.num_codes)
        self.transformer = RetrievalTransformer(dim, **_with_image_size(transformer, image_size))
        self.embed = nn.ModuleList(WindowEmbedding(c, dim, p) for c, p in zip(self.feature_channels, self.patch_sizes))
        self.unembed = nn.ModuleList(WindowUnembedding(c, dim, p)
                                     for c, p in zip(self.feature_channels, self.patch_sizes))

    def codes(self, index: int):
        """The code selection of scale ``index`` (a slice for the built-in allocations)."""
        return allocation_codes(self.allocation, index, self.num_scales, self.codebook.num_codes)

    @staticmethod
    def outside_mask(flow: Tensor, grid: Sequence[int]) -> Tensor:
        """``(B, h*w)`` bool, True where the flow resized to ``grid`` has ``|x| > 1`` or ``|y| > 1``."""
        f = _resize(flow.permute(0, 3, 1, 2), grid).flatten(2)  # (B, 2, L)
        out = (f > 1) | (f < -1)
        return out[:, 0] | out[:, 1]

    def forward(self, index: int, feature: Tensor, flow: Tensor | None = None) -> Tensor:
        """Compensate the warped feature of scale ``index``; ``flow`` (B, h, w, 2) gives the padding mask."""
        tokens, grid = self.embed[index](feature)
        mask = self.outside_mask(flow, grid) if self.mask_outside and flow is not None else None
        sel = self.codes(index)
        tokens = self.transformer(tokens, _code_vectors(self.codebook, sel), size=grid, key_padding_mask=mask)
        return self.unembed[index](tokens, grid)

    def quantize(self, index: int, feature: Tensor) -> dict[str, Any]:
        """VQ of a feature's window tokens against scale ``index``'s codes (the appearance codebook loss target:
        SMAC quantises the *driving* frame's features).  Returns the codebook's dict plus ``tokens``
        (B, dim, h, w), the embedded feature."""
        tokens, (h, w) = self.embed[index](feature)
        z = tokens.transpose(1, 2).reshape(tokens.shape[0], self.dim, h, w)
        out = dict(self.codebook(z, codes=self.codes(index)))
        out["tokens"] = z
        return out


# ---------------------------------------------------------------------------------------------------------
# the compensator
# ---------------------------------------------------------------------------------------------------------
@COMPENSATORS.register_module()
class MultiScaleCodebookCompensator(Compensator):
    """SMAC's multi-scale motion + appearance codebook compensation (sec. 3.2-3.3, Fig. 2).

    Works on the raw source features of ``num_scales`` scales (``ctx['features']``: the encoder levels the
    model warps, fine to coarse) and the motion estimator's flow, occlusion map and driving keypoint heatmaps
    (``ctx['motion']``: ``deformation``, ``occlusion_map``, ``driving_kp_heatmap``).  Scales are processed
    coarse to fine (scale 0 = coarsest).  At scale ``s``: MCC (if ``s`` in ``motion_scales``) refines flow
    and occlusion, the feature is warped with the current flow and occlusion (``ctx['warper']``), then ACC
    (if ``s`` in ``appearance_scales``) compensates it.  A scale without MCC keeps the flow and occlusion of
    the previous one.

    Args:
        channels: raw feature widths per scale, coarse to fine.
        patch_sizes: ACC window size per scale, coarse to fine (SMAC 1, 2, 4, 8).
        motion: :class:`MotionCodebookCompensation` config (``feature_channels`` filled in) or ``None``.
        appearance: :class:`AppearanceCodebookCompensation` config (``feature_channels``, ``patch_sizes``
            filled in) or ``None``.
        motion_scales, appearance_scales: which scales each compensation serves (default: all when the part
            is given).  Code allocations count the scales a part serves.
        target_indices: for the appearance codebook loss, which outputs of ``ctx['encoder']`` on the driving
            frame are the targets, one per scale, fine to coarse (SMAC ``(0, 1, 2, 3)``: the 32 px target is
            the encoder's feature after the first residual unit of the coarsest level, not its latent).
            ``None``: the encoder's outputs as they are (their number must be ``num_scales``).

    It warps the raw features itself (``warps_features = True``: the model's own warp with the unrefined
    flow is skipped; ``warped`` is ignored).

    Returns ``features`` (compensated, fine to coarse, for the decoder), ``warped_features`` (the features
    warped by the refined flow and occlusion, before ACC, fine to coarse) and, in processing order (coarse to
    fine): ``deformation_list`` (the initial flow, then one per MCC step), ``occlusion_list`` (one per MCC
    step), ``residual_deformations`` (grid units). In training mode also ``motion_vq`` and
    ``motion_reconstructions`` (pixels; for
    :class:`~thkit.losses.smac.FlowReconstructionLoss`) per MCC step, and, when the driving frame is known,
    ``appearance_vq`` per ACC scale (for :class:`~thkit.losses.smac.CodebookLoss`).
    """

    warps_features = True

    def __init__(self, channels: Sequence[int], patch_sizes: Sequence[int] | None = None, motion: dict | None = None,
                 appearance: dict | None = None, motion_scales: Sequence[int] | None = None,
                 appearance_scales: Sequence[int] | None = None, target_indices: Sequence[int] | None = None):
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.num_scales = n = len(self.channels)
        if n < 1:
            raise ValueError("channels must list at least one scale (coarse to fine)")

        def scales(sel, name, part):
            if part is None:
                if sel:
                    raise ValueError(f"{name} lists scales but no {name.split('_')[0]} part is configured")
                return []
            sel = list(range(n)) if sel is None else sorted({int(s) for s in sel})
            bad = [s for s in sel if not 0 <= s < n]
            if bad or not sel:
                raise ValueError(f"{name} {list(sel)} must be non-empty scale indices in 0..{n - 1} (coarse to fine)")
            return sel

        self.motion_scales = scales(motion_scales, "motion_scales", motion)
        self.appearance_scales = scales(appearance_scales, "appearance_scales", appearance)
        self.patch_sizes = None if patch_sizes is None else [int(p) for p in patch_sizes]
        if self.patch_sizes is not None and len(self.patch_sizes) != n:
            raise ValueError(f"patch_sizes {self.patch_sizes} must give one window size per scale ({n})")
        self.motion = None
        if motion is not None:
            self.motion = build("compensator", motion, "motion",
                                default_args={"feature_channels": [self.channels[s] for s in self.motion_scales]})
        self.appearance = None
        if appearance is not None:
            if self.patch_sizes is None:
                raise ValueError("appearance compensation needs patch_sizes (one window size per scale)")
            self.appearance = build("compensator", appearance, "appearance", default_args={
                "feature_channels": [self.channels[s] for s in self.appearance_scales],
                "patch_sizes": [self.patch_sizes[s] for s in self.appearance_scales]})
        self.target_indices = None if target_indices is None else [int(i) for i in target_indices]
        if self.target_indices is not None and len(self.target_indices) != n:
            raise ValueError(f"target_indices {self.target_indices} must give one encoder output per scale ({n})")

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, motion_scales={self.motion_scales}, "
                f"appearance_scales={self.appearance_scales}")

    def forward(self, warped: Sequence[Tensor] | None, ctx: dict[str, Any]) -> dict[str, Any]:
        for key in ("features", "motion", "warper"):
            if key not in ctx:
                raise ValueError(f"MultiScaleCodebookCompensator needs ctx[{key!r}] (built by TalkingHeadModel)")
        raw = list(ctx["features"])
        if len(raw) != self.num_scales:
            raise ValueError(f"MultiScaleCodebookCompensator has {self.num_scales} scales but got {len(raw)} source "
                             f"features (set the model's warp_levels to the {self.num_scales} encoder outputs)")
        levels = raw[::-1]  # coarse to fine
        got = [f.shape[1] for f in levels]
        if got != self.channels:
            raise ValueError(f"source feature widths (coarse to fine) {got} differ from channels={self.channels}")
        motion, warper = ctx["motion"], ctx["warper"]
        flow = motion["deformation"]
        occ: Any = motion["occlusion_map"]
        if isinstance(occ, (list, tuple)) and len(occ) == 1:
            occ = occ[0]
        training = self.training
        kp_tokens = None
        if self.motion is not None:
            if "driving_kp_heatmap" not in motion:
                raise ValueError("motion codebook compensation needs the driving keypoint heatmaps: the motion "
                                 "estimator must return 'driving_kp_heatmap' (FirstOrderMotion: "
                                 "return_driving_heatmap=True)")
            kp_tokens = self.motion.encode_keypoints(motion["driving_kp_heatmap"], flow.shape[1:3])

        out: dict[str, Any] = {"deformation_list": [flow], "occlusion_list": [], "residual_deformations": []}
        if training and self.motion is not None:
            out["motion_vq"], out["motion_reconstructions"] = [], []
        compensated, warped_levels = [], []
        for s, feat in enumerate(levels):
            if s in self.motion_scales:
                step = self.motion(self.motion_scales.index(s), flow, occ, feat, kp_tokens, warper, quantize=training)
                flow, occ = step["deformation"], step["occlusion"]
                out["deformation_list"].append(flow)
                out["occlusion_list"].append(occ)
                out["residual_deformations"].append(step["residual"])
                if training:
                    out["motion_vq"].append(step["vq"])
                    out["motion_reconstructions"].append(step["reconstruction"])
            x = warper(feat, flow, occ)
            warped_levels.append(x)
            if s in self.appearance_scales:
                x = self.appearance(self.appearance_scales.index(s), x, flow)
            compensated.append(x)
        out["features"] = compensated[::-1]
        out["warped_features"] = warped_levels[::-1]
        if training and self.appearance is not None and ctx.get("driving") is not None:
            out["appearance_vq"] = self.appearance_targets(ctx)
        return out

    def appearance_targets(self, ctx: dict[str, Any]) -> list[dict[str, Any]]:
        """The appearance VQ of the driving frame's features (one per ACC scale, coarse to fine)."""
        encoder = ctx.get("encoder")
        if encoder is None:
            raise ValueError("the appearance codebook loss needs ctx['encoder'] to encode the driving frame")
        feats = list(encoder(ctx["driving"]))
        if self.target_indices is not None:
            if max(self.target_indices) >= len(feats) or min(self.target_indices) < -len(feats):
                raise ValueError(f"target_indices {self.target_indices} out of range for {len(feats)} encoder outputs")
            feats = [feats[i] for i in self.target_indices]
        elif len(feats) != self.num_scales:
            raise ValueError(f"the encoder gives {len(feats)} outputs for {self.num_scales} scales; set "
                             f"target_indices (fine to coarse) to choose the appearance targets")
        levels = feats[::-1]
        return [self.appearance.quantize(i, levels[s]) for i, s in enumerate(self.appearance_scales)]

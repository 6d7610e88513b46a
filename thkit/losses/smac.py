"""SMAC's codebook-related training losses (Zhao et al., CVPR 2025, training objective; official
``basicsr/models/appmotioncomp_model.py`` and ``options/train.yml``).

* :class:`CodebookLoss`: the VQ losses of the motion and the appearance codebooks, summed over scales;
* :class:`FlowReconstructionLoss`: the motion codebook must be able to decode the flow it quantised;
* :class:`LowResolutionLoss`: ``L_low``, pixel + perceptual loss of the low-resolution (no-fusion) decoding.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.layers import make_coordinate_grid
from thkit.losses._base import Loss, as_list, check_same_shape
from thkit.registry import LOSSES

Tensor = torch.Tensor


def _vq_items(x: Any, what: str) -> list[Any]:
    if isinstance(x, Mapping) and "loss" not in x:
        return list(x.values())  # {scale: vq output}
    if isinstance(x, (Mapping, Tensor)):
        return [x]
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return list(x)
    raise TypeError(f"CodebookLoss: {what} must be a VQ output dict, a scalar, or a list / {{scale: ...}} of them; "
                    f"got {type(x).__name__}")


def _vq_term(item: Any, key: str, what: str) -> Tensor | None:
    if isinstance(item, Tensor):
        return item if key == "loss" else None
    if isinstance(item, Mapping):
        if key == "loss" and "loss" not in item:
            raise ValueError(f"CodebookLoss: a {what} VQ output has no 'loss' (keys: {', '.join(map(str, item))})")
        return item.get(key)
    raise TypeError(f"CodebookLoss: a {what} VQ entry must be a dict or a scalar tensor, got {type(item).__name__}")


@LOSSES.register_module()
class CodebookLoss(Loss):
    """VQ losses of the motion and appearance codebooks, summed over scales (SMAC: motion and appearance
    codebook losses; VQ-VAE, van den Oord et al. 2017).

    Each entry is what :class:`~thkit.codebook.vq.VectorQuantizer` returns (``loss = codebook + beta *
    commitment``), or its ``loss`` scalar.  Returns ``{'motion': weight * motion_weight * sum_s loss_s,
    'appearance': ...}`` (the parts given) plus the statistics ``*_codebook`` / ``*_commitment`` (sums of
    ``codebook_loss`` / ``commitment_loss``).  Inputs: ``motion`` <- ``motion_vq``, ``appearance`` <-
    ``appearance_vq`` (lists or ``{scale: ...}``).

    Args: ``weight`` (overall), ``motion_weight`` (SMAC ``motion_codebook_code_opt`` 1), ``appearance_weight``
    (SMAC ``app_codebook_code_opt`` 1).
    """

    default_inputs = {"motion": "motion_vq", "appearance": "appearance_vq"}
    stat_keys = ("motion_codebook", "motion_commitment", "appearance_codebook", "appearance_commitment")

    def __init__(self, weight: float = 1.0, motion_weight: float = 1.0, appearance_weight: float = 1.0):
        super().__init__(weight)
        self.part_weights = {"motion": float(motion_weight), "appearance": float(appearance_weight)}

    def forward(self, motion: Any = None, appearance: Any = None) -> dict[str, Tensor]:
        if motion is None and appearance is None:
            raise ValueError("CodebookLoss needs the motion and/or the appearance VQ outputs")
        out: dict[str, Tensor] = {}
        for part, value in (("motion", motion), ("appearance", appearance)):
            if value is None or self.part_weights[part] == 0:
                continue
            items = _vq_items(value, part)
            if not items:
                raise ValueError(f"CodebookLoss: no {part} VQ outputs")
            out[part] = self.weight * self.part_weights[part] * sum(_vq_term(i, "loss", part) for i in items)
            for stat in ("codebook", "commitment"):
                terms = [_vq_term(i, f"{stat}_loss", part) for i in items]
                if all(t is not None for t in terms):
                    out[f"{part}_{stat}"] = sum(terms).detach()
        return out


@LOSSES.register_module()
class FlowReconstructionLoss(Loss):
    """Motion-codebook flow reconstruction (SMAC ``motion_codebook_recon_opt``, L1, weight 32).

    At each motion-compensation step ``s`` the official model embeds the residual flow
    ``M_{s-1} - identity`` (scaled to pixels of the flow grid, ``x (h-1)/2``), quantises it and decodes the
    codes back to a flow (``to_motion``).  The loss is ``weight * sum_s mean |R_s - sg(M_{s-1} - identity)|``,
    compared in normalised grid units (the official divides the decoded pixel flow by ``(h-1)/2``).

    Inputs: ``reconstructions`` <- ``motion_reconstructions`` (list of (B, h, w, 2) decoded residual flows),
    ``flows`` <- ``deformation_list`` (the flows the steps started from, (B, h, w, 2) grid_sample coordinates;
    the official list also holds the final flow, so it may be one longer: the extra last one is unused).

    Args:
        weight: 32 in SMAC.
        recon_units: units of the given reconstructions: ``'pixel'`` (the decoder's raw output, as official) or
            ``'grid'`` (already divided).
        loss_units: ``'grid'`` (official) or ``'pixel'`` (both sides in pixels of the flow grid).
    """

    default_inputs = {"reconstructions": "motion_reconstructions", "flows": "deformation_list"}

    def __init__(self, weight: float = 32.0, recon_units: str = "pixel", loss_units: str = "grid"):
        super().__init__(weight)
        for n, v in (("recon_units", recon_units), ("loss_units", loss_units)):
            if v not in ("pixel", "grid"):
                raise ValueError(f"{n} must be 'pixel' or 'grid', got {v!r}")
        self.recon_units = recon_units
        self.loss_units = loss_units

    def forward(self, reconstructions: Sequence[Tensor] | Tensor, flows: Sequence[Tensor] | Tensor) -> Tensor:
        recs, fl = as_list(reconstructions, "reconstructions"), as_list(flows, "flows")
        if len(fl) not in (len(recs), len(recs) + 1):
            raise ValueError(f"FlowReconstructionLoss: {len(recs)} reconstructions need {len(recs)} starting flows "
                             f"(or {len(recs) + 1} with the final one), got {len(fl)}")
        total = recs[0].new_zeros(())
        for rec, flow in zip(recs, fl):
            if flow.dim() != 4 or flow.shape[-1] != 2:
                raise ValueError(f"FlowReconstructionLoss: flows must be (B, h, w, 2), got {tuple(flow.shape)}")
            check_same_shape(rec, flow, "FlowReconstructionLoss(reconstruction, flow)")
            h, w = flow.shape[1:3]
            to_pixel = flow.new_tensor([(w - 1) / 2, (h - 1) / 2])
            target = (flow - make_coordinate_grid(h, w, dtype=flow.dtype, device=flow.device)).detach()
            if self.recon_units == "pixel":
                rec = rec / to_pixel
            if self.loss_units == "pixel":
                rec, target = rec * to_pixel, target * to_pixel
            total = total + F.l1_loss(rec, target)
        return self.weight * total


@LOSSES.register_module()
class LowResolutionLoss(Loss):
    """SMAC's ``L_low``: pixel L1 + perceptual loss between the low-resolution decoding and the driving frame.

    The official model decodes the compensated 32x32 latent with the generator alone (no multi-scale fusion)
    to a full-size image (``out_lr``) and applies the same pixel and perceptual criteria as to the output,
    each times 0.5 (``lr_pixel_perceptual_opt``).  Returns ``{'pixel': ..., 'perceptual': ...}``.

    Inputs: ``pred`` <- ``prediction_lr`` (a tensor or a list, one weight each), ``target`` <- ``driving``.

    Args:
        weight: 0.5 in SMAC; a list gives one weight per low-resolution output.
        pixel_weight: factor of the L1 term (SMAC pixel_opt 1.0; 0 = off).
        perceptual: a :class:`~thkit.losses.perceptual.PerceptualPyramidLoss` config, a built loss, or (in a
            :class:`~thkit.losses.bundle.LossBundle`) ``'@perceptual'`` to share the bundle's one; ``None`` = off.
    """

    default_inputs = {"pred": "prediction_lr", "target": "driving"}

    def __init__(self, weight: float | Sequence[float] = 0.5, pixel_weight: float = 1.0,
                 perceptual: dict | nn.Module | None = None):
        weights = [float(w) for w in weight] if isinstance(weight, Sequence) else [float(weight)]
        super().__init__(weights[0])
        self.weights = weights
        self.pixel_weight = float(pixel_weight)
        if isinstance(perceptual, Mapping):
            from thkit.builder import build

            perceptual = build("loss", perceptual, "perceptual")
        if perceptual is not None and not callable(perceptual):
            raise TypeError(f"perceptual must be a loss config, a loss module or None, got {type(perceptual).__name__}")
        self.perceptual = perceptual

    def forward(self, pred: Tensor | Sequence[Tensor], target: Tensor) -> dict[str, Tensor]:
        preds = as_list(pred, "pred")
        weights = self.weights if len(self.weights) > 1 else self.weights * len(preds)
        if len(weights) != len(preds):
            raise ValueError(f"LowResolutionLoss: {len(self.weights)} weights for {len(preds)} low-resolution outputs")
        out: dict[str, Tensor] = {}
        pix = percep = target.new_zeros(())
        for w, p in zip(weights, preds):
            check_same_shape(p, target, "LowResolutionLoss(pred, target)")
            if self.pixel_weight != 0:
                pix = pix + w * self.pixel_weight * F.l1_loss(p, target)
            if self.perceptual is not None:
                percep = percep + w * self.perceptual(p, target)
        if self.pixel_weight != 0:
            out["pixel"] = pix
        if self.perceptual is not None:
            out["perceptual"] = percep
        return out

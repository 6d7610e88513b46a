"""The VQGAN / CodeFormer-lineage decoder with multi-scale feature fusion, as SMAC uses it.

SMAC (Zhao et al., CVPR 2025, sec. 3.3-3.4): the decoder starts from the compensated coarsest feature and,
at every finer resolution, fuses the compensated warped encoder feature of that resolution twice:

* CodeFormer's controllable feature transformation (Zhou et al., NeurIPS 2022, eq. 5), an SFT:
  ``h = ResBlock([F_c, x]);  x = x + w * (x * scale(h) + shift(h))``;
* an additive fusion ``x = x + conv3x3(F_c)``.

Without fusion the same blocks decode the coarsest feature alone: SMAC's low-resolution output used by
``L_low`` (official ``out_lr``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from thkit.interfaces import Decoder
from thkit.layers.conditioning import build_conditioning
from thkit.layers.vqgan import VQAttnBlock, VQResBlock, VQUpsample, group_norm
from thkit.registry import DECODERS

Tensor = torch.Tensor


class SFTFusion(nn.Module):
    """Fuse a feature ``f`` into the decoder state ``x`` (SMAC multi-scale fusion; CodeFormer CFT).

    ``encode`` = ResBlock(2C -> C) on ``[f, x]``; ``scale`` / ``shift`` = conv3x3 - LeakyReLU(0.2) - conv3x3;
    then ``x = x + w * (x * scale + shift)`` (``sft``) and ``x = x + add(f)`` (``add``, a 3x3 conv).
    """

    def __init__(self, channels: int, norm_groups: int = 32, sft: bool = True, add: bool = True):
        super().__init__()
        if not (sft or add):
            raise ValueError("a fusion needs sft and/or add")
        if sft:
            self.encode = VQResBlock(2 * channels, channels, norm_groups)
            self.scale = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                                       nn.Conv2d(channels, channels, 3, padding=1))
            self.shift = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                                       nn.Conv2d(channels, channels, 3, padding=1))
        else:
            self.encode = self.scale = self.shift = None
        self.add = nn.Conv2d(channels, channels, 3, padding=1) if add else None

    def forward(self, feature: Tensor, x: Tensor, weight: float = 1.0) -> Tensor:
        if feature.shape != x.shape:
            raise ValueError(f"fusion: feature {tuple(feature.shape)} does not match the decoder state "
                             f"{tuple(x.shape)}")
        if self.encode is not None:
            h = self.encode(torch.cat([feature, x], dim=1))
            x = x + weight * (x * self.scale(h) + self.shift(h))
        if self.add is not None:
            x = x + self.add(feature)
        return x


@DECODERS.register_module()
class VQGANDecoder(Decoder):
    """VQGAN generator (``blocks`` laid out as the lineage's ``Generator.blocks``) with SFT + additive fusion.

    ``blocks`` = conv_in (``emb_dim`` -> ``nf * ch_mult[-1]``), mid ResBlock-AttnBlock-ResBlock, then for each
    level from coarse to fine ``num_res_blocks`` x (ResBlock [+ AttnBlock]) and an Upsample (not after level
    0), GroupNorm, conv_out.  No output activation (SMAC's images are in ``[-1, 1]``).

    Fusion: for every level in ``fuse_levels`` (all but the coarsest by default) a :class:`SFTFusion` runs
    right after the level's first ResBlock (official: generator blocks 9, 12, 15 at 64/128/256 px).  Modules
    ``fusion.i`` are ordered as they are met, coarse to fine.

    ``forward(features, ctx)``: ``features`` fine to coarse; the last (coarsest) is the decoder input, the
    others are fused by matching spatial size (one per fusion level, in order).  Returns ``prediction`` and,
    when ``low_res_output`` says so, ``prediction_lr``: the input decoded by the same blocks without fusion.

    Args:
        out_channels, nf, ch_mult, num_res_blocks, attn_levels, emb_dim, norm_groups: as
            :class:`~thkit.encode.vqgan.VQGANEncoder`.
        fuse_levels: levels that fuse a feature (``None`` = every level but the coarsest; ``()`` = none).
        sft, add: the two fusion operations (SMAC: both).
        fusion_weight: ``w`` of the SFT (SMAC: 1); 0 skips every fusion, as the official ``w = 0``.
        low_res_output: ``'train'`` (in training mode; SMAC's ``out_lr``), ``'always'`` or ``'never'``.
        conditioning: optional ``conditioning`` part (e.g. ``ScaleCodeInjection``): a per-frame code from the
            generation context added to the input and after every block up to the final norm and conv.
    """

    def __init__(self, out_channels: int = 3, nf: int = 64, ch_mult: Sequence[int] = (1, 2, 2, 4),
                 num_res_blocks: int = 2, attn_levels: Sequence[int] = (3,), emb_dim: int | None = None,
                 norm_groups: int = 32, fuse_levels: Sequence[int] | None = None, sft: bool = True,
                 add: bool = True, fusion_weight: float = 1.0, low_res_output: str = "train",
                 attn_backend: str | None = None, conditioning: dict | None = None):
        super().__init__()
        ch_mult = [int(m) for m in ch_mult]
        n = len(ch_mult)
        if low_res_output not in ("train", "always", "never"):
            raise ValueError(f"low_res_output must be 'train', 'always' or 'never', got {low_res_output!r}")
        fuse_levels = list(range(n - 1)) if fuse_levels is None else sorted({int(lv) for lv in fuse_levels})
        bad = [lv for lv in fuse_levels if not 0 <= lv < n - 1]
        if bad:
            raise ValueError(f"fuse_levels {bad} out of range: fusion happens at levels 0..{n - 2} "
                             f"(the coarsest level {n - 1} is the decoder input)")
        emb_dim = nf * ch_mult[-1] if emb_dim is None else int(emb_dim)
        self.in_channels = emb_dim
        self.fusion_weight = float(fusion_weight)
        self.low_res_output = low_res_output
        cin = nf * ch_mult[-1]
        blocks: list[nn.Module] = [nn.Conv2d(emb_dim, cin, kernel_size=3, padding=1),
                                   VQResBlock(cin, cin, norm_groups), VQAttnBlock(cin, norm_groups, attn_backend),
                                   VQResBlock(cin, cin, norm_groups)]
        fusion, fuse_at, fused_channels = [], {}, []
        for lv in reversed(range(n)):
            cout = nf * ch_mult[lv]
            for unit in range(num_res_blocks):
                blocks.append(VQResBlock(cin, cout, norm_groups))
                cin = cout
                if unit == 0 and lv in fuse_levels:
                    fuse_at[len(blocks) - 1] = len(fusion)
                    fusion.append(SFTFusion(cout, norm_groups, sft=sft, add=add))
                    fused_channels.append(cout)
                if lv in attn_levels:
                    blocks.append(VQAttnBlock(cin, norm_groups, attn_backend))
            if lv != 0:
                blocks.append(VQUpsample(cin))
        blocks += [group_norm(cin, norm_groups), nn.Conv2d(cin, out_channels, kernel_size=3, padding=1)]
        self.blocks = nn.ModuleList(blocks)
        self.fusion = nn.ModuleList(fusion)
        self.fuse_at = fuse_at  # block index -> fusion index
        #: widths of the features the decoder takes, fine to coarse (fused levels, then the input)
        self.feature_channels = list(reversed(fused_channels)) + [emb_dim]
        widths = [emb_dim]  # the input, then each block's output up to (not including) the final norm and conv
        for block in blocks[:-2]:
            widths.append(block.out_channels if isinstance(block, nn.Conv2d) else
                          getattr(block, "out_channels", widths[-1]))
        self.conditioning = build_conditioning(conditioning, widths)

    def extra_repr(self) -> str:
        return f"fuse_after_blocks={sorted(self.fuse_at)}, fusion_weight={self.fusion_weight}"

    def decode(self, x: Tensor, fused: Sequence[Tensor] | None = None, code: Tensor | None = None) -> Tensor:
        """Run the blocks on ``x``; ``fused`` (coarse to fine, one per fusion) are fused on the way (or none);
        ``code`` conditions the layers through :attr:`conditioning`."""
        cond = self.conditioning if code is not None else None
        x = cond(x, 0, code) if cond is not None else x
        last = len(self.blocks) - 2
        for i, block in enumerate(self.blocks):
            x = block(x)
            if fused is not None and i in self.fuse_at:
                x = self.fusion[self.fuse_at[i]](fused[self.fuse_at[i]], x, self.fusion_weight)
            if cond is not None and i < last:
                x = cond(x, i + 1, code)
        return x

    def forward(self, features: Sequence[Tensor], ctx: dict[str, Any] | None = None) -> dict[str, Any]:
        feats = list(features)
        if not feats:
            raise ValueError("VQGANDecoder needs at least the coarsest feature")
        x = feats[-1]
        if x.shape[1] != self.in_channels:
            raise ValueError(f"VQGANDecoder input (the coarsest feature) has {x.shape[1]} channels, expected "
                             f"{self.in_channels}")
        fine = feats[:-1][::-1]  # coarse to fine
        nf = len(self.fusion)
        if len(fine) != nf:
            raise ValueError(f"VQGANDecoder fuses {nf} features (widths {self.feature_channels[:-1]}, fine to "
                             f"coarse) plus the input; got {len(feats)} features")
        # shapes are checked by each fusion against the decoder state at its block
        use = self.fusion_weight != 0
        code = self.conditioning.code(ctx) if self.conditioning is not None else None
        out = {"prediction": self.decode(x, fine if use else None, code)}
        if self.low_res_output == "always" or (self.low_res_output == "train" and self.training):
            out["prediction_lr"] = self.decode(x, None, code)
        return out

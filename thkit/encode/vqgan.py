"""The VQGAN / CodeFormer-lineage convolutional encoder (Esser et al., CVPR 2021, sec. 3.1), as SMAC uses it.

SMAC (Zhao et al., CVPR 2025, sec. 3.1) encodes the source with the encoder of a VQGAN autoencoder whose
latent is *not* quantised; it keeps intermediate features at every resolution for the multi-scale codebook
compensation (sec. 3.2-3.3) and the decoder fusion.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from thkit.interfaces import Encoder
from thkit.layers.vqgan import VQAttnBlock, VQDownsample, VQResBlock, group_norm
from thkit.registry import ENCODERS

Tensor = torch.Tensor

_TAP = re.compile(r"^L(?P<level>\d+)(?:\.(?P<unit>\d+))?$")


@ENCODERS.register_module()
class VQGANEncoder(Encoder):
    """VQGAN encoder: ``blocks`` = conv_in, per level ``num_res_blocks`` x (ResBlock [+ AttnBlock]) and a
    Downsample (not after the last level), mid ResBlock-AttnBlock-ResBlock, GroupNorm, conv_out to ``emb_dim``.

    Level ``l`` works at stride ``2**l`` with ``nf * ch_mult[l]`` channels; GroupNorms use eps 1e-6.  The
    module list is laid out exactly as the lineage's ``Encoder.blocks`` (so official keys map 1:1).

    Args:
        in_channels: image channels.
        nf: base width; ch_mult: width multiplier per level (fine to coarse).
        num_res_blocks: residual blocks per level.
        attn_levels: levels whose residual blocks are followed by self-attention (SMAC: the coarsest, i.e.
            32x32 at 256 px; given by level so no image size is hard-coded).
        emb_dim: latent width (default ``nf * ch_mult[-1]``).
        norm_groups: GroupNorm groups (official 32).
        out_indices: which features to return, fine to coarse.  Each entry is a block index (int; negative
            from the end) or a tap name: ``'L{l}'`` (end of level ``l``, before its Downsample), ``'L{l}.{n}'``
            (after the ``n``-th residual unit of level ``l``, its attention included) or ``'latent'`` (the
            final output).  Default: ``'L0' .. 'L{n-2}'`` and ``'latent'``.  SMAC: ``('L0', 'L1', 'L2',
            'L3.1', 'latent')`` (official blocks 2, 5, 8, 11, 18).
        attn_backend: attention backend of the AttnBlocks (``None`` = default).

    ``forward(image) -> list[Tensor]`` (fine to coarse, as ``out_indices``); ``out_channels`` their widths,
    ``out_strides`` their strides.
    """

    def __init__(self, in_channels: int = 3, nf: int = 64, ch_mult: Sequence[int] = (1, 2, 2, 4),
                 num_res_blocks: int = 2, attn_levels: Sequence[int] = (3,), emb_dim: int | None = None,
                 norm_groups: int = 32, out_indices: Sequence[int | str] | None = None,
                 attn_backend: str | None = None):
        super().__init__()
        ch_mult = [int(m) for m in ch_mult]
        if not ch_mult or num_res_blocks < 1:
            raise ValueError(f"need at least one level and one res block per level, got ch_mult={ch_mult}, "
                             f"num_res_blocks={num_res_blocks}")
        n = len(ch_mult)
        bad = [lv for lv in attn_levels if not 0 <= int(lv) < n]
        if bad:
            raise ValueError(f"attn_levels {bad} out of range for {n} levels (0..{n - 1})")
        emb_dim = nf * ch_mult[-1] if emb_dim is None else int(emb_dim)
        self.num_levels = n
        self.emb_dim = emb_dim
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, nf, kernel_size=3, padding=1)]
        taps: dict[str, tuple[int, int, int]] = {}  # name -> (block index, channels, stride)
        cin = nf
        for lv, mult in enumerate(ch_mult):
            cout = nf * mult
            for unit in range(num_res_blocks):
                blocks.append(VQResBlock(cin, cout, norm_groups))
                cin = cout
                if lv in attn_levels:
                    blocks.append(VQAttnBlock(cin, norm_groups, attn_backend))
                taps[f"L{lv}.{unit + 1}"] = (len(blocks) - 1, cin, 2**lv)
            taps[f"L{lv}"] = (len(blocks) - 1, cin, 2**lv)
            if lv != n - 1:
                blocks.append(VQDownsample(cin))
        blocks += [VQResBlock(cin, cin, norm_groups), VQAttnBlock(cin, norm_groups, attn_backend),
                   VQResBlock(cin, cin, norm_groups), group_norm(cin, norm_groups),
                   nn.Conv2d(cin, emb_dim, kernel_size=3, padding=1)]
        taps["latent"] = (len(blocks) - 1, emb_dim, 2 ** (n - 1))
        self.blocks = nn.ModuleList(blocks)
        self.taps = taps

        if out_indices is None:
            out_indices = [f"L{lv}" for lv in range(n - 1)] + ["latent"]
        self.out_blocks: list[int] = []
        self.out_channels: list[int] = []
        self.out_strides: list[int] = []
        for entry in out_indices:
            idx, ch, stride = self._resolve(entry)
            self.out_blocks.append(idx)
            self.out_channels.append(ch)
            self.out_strides.append(stride)
        if self.out_blocks != sorted(self.out_blocks) or len(set(self.out_blocks)) != len(self.out_blocks):
            raise ValueError(f"out_indices {list(out_indices)} must name distinct blocks in forward order "
                             f"(blocks {self.out_blocks})")

    def _resolve(self, entry: int | str) -> tuple[int, int, int]:
        nb = len(self.blocks)
        if isinstance(entry, str):
            if entry in self.taps:
                return self.taps[entry]
            m = _TAP.match(entry)
            hint = "'L{level}', 'L{level}.{unit}' or 'latent'"
            if m is None:
                raise ValueError(f"out_indices entry {entry!r} is not a block index or a tap name ({hint})")
            raise ValueError(f"out_indices entry {entry!r} does not exist in this encoder "
                             f"(taps: {', '.join(self.taps)})")
        i = int(entry)
        if not -nb <= i < nb:
            raise ValueError(f"out_indices entry {i} out of range for {nb} blocks")
        i %= nb
        for name, (idx, ch, stride) in self.taps.items():
            if idx == i:
                return idx, ch, stride
        # any other block: its width and stride from a dry walk of the layout
        ch, stride = self._block_shape(i)
        return i, ch, stride

    def _block_shape(self, i: int) -> tuple[int, int]:
        ch, stride = None, 1
        for j, b in enumerate(self.blocks[: i + 1]):
            if isinstance(b, nn.Conv2d):
                ch = b.out_channels
            elif isinstance(b, VQResBlock):
                ch = b.out_channels
            elif isinstance(b, VQDownsample):
                stride *= 2
        return int(ch), stride

    def forward(self, image: Tensor) -> list[Tensor]:
        feats = []
        want = iter(self.out_blocks)
        nxt = next(want, None)
        x = image
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == nxt:
                feats.append(x)
                nxt = next(want, None)
                if nxt is None:
                    break
        return feats

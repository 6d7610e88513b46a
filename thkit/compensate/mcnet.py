"""MCNet's memory compensation (Hong & Xu, ICCV 2023, "Implicit Identity Representation Conditioned Memory
Compensation Network for Talking Head Video Generation", sec. 3.2-3.3, Fig. 2-3).

One learned **global meta-memory** ``M`` (C x S x S) is shared by every scale.  For a warped feature map ``F_w``
of a compensated scale (the official code's ``ExpendMemoryUnit``, half=True):

1. split the channels: the even ones ``F_w[:, 0::2]`` pass through, the odd ones are compensated;
2. ``F = proj_s(F_w[:, 1::2])`` (1x1 conv of the scale to C channels);
3. **implicit identity representation** (sec. 3.2, eq. 2): ``z = MLP([GAP(F), flatten(kp_source)])`` --
   the pooled feature together with the *source* keypoints (C + 2K -> 128 -> 512);
4. **identity-conditioned memory** (eq. 3): ``M_id = StyleConv(M, z)``, a modulated, demodulated 3x3 conv, noise
   injection and a fused leaky ReLU (:class:`~thkit.layers.stylegan.StyleConv`);
5. **dynamic keys and values** (eq. 4): ``[K, V] = relu(DynConv(M_id; attention from F))`` with 4 kernels mixed by
   ``softmax(fc(GAP(F)) / 34)`` (:class:`~thkit.layers.dynamic_conv.DynamicConv2d`); query ``Q = relu(conv1x1(F))``;
6. **memory compensation** (eq. 5): global attention over the S^2 memory slots, ``R = softmax(Q K^T / 4) V``
   (the official scale is the literal 4, not sqrt(C); computed through :func:`thkit.attention.attention`), then
   ``F' = relu(conv1x1(F - R)) + F`` -> 3x3 conv to the odd half's width -> InstanceNorm (affine) -> ReLU;
7. re-interleave the pass-through and the compensated channels (even, odd, even, ...).

Training adds the feature-consistency loss ``|V - sg(resize(F))|_1`` per scale (sec. 3.4,
:class:`thkit.losses.mcnet.MemoryConsistencyLoss`): the compensator returns ``memory_features`` (the ``F``) and
``memory_values`` (the ``V``), coarse to fine.

Noise injection: the official StyleConv adds freshly drawn noise on every call (its strength is a learned scalar,
zero at initialisation).  ``noise='auto'`` (default) draws it in training only, so inference is deterministic;
``'random'`` draws it always (the official inference); ``'zero'`` never.  ``noise_seed`` makes the drawn noise
reproducible: every forward draws from a generator seeded with it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.attention import attention
from thkit.interfaces import Compensator
from thkit.layers.dynamic_conv import DynamicConv2d
from thkit.layers.stylegan import NOISE_MODES, StyleConv
from thkit.registry import COMPENSATORS

Tensor = torch.Tensor


def split_channels(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(even, odd)`` channels of ``x``: ``x[:, 0::2]`` (passed through) and ``x[:, 1::2]`` (compensated)."""
    return x[:, 0::2], x[:, 1::2]


def interleave_channels(even: Tensor, odd: Tensor) -> Tensor:
    """Inverse of :func:`split_channels`: channel ``2i`` from ``even``, ``2i + 1`` from ``odd``."""
    b, c, h, w = odd.shape
    return torch.stack((even, odd), dim=2).reshape(b, 2 * c, h, w)


@COMPENSATORS.register_module()
class MemoryCompensator(Compensator):
    """MCNet's implicit-identity-conditioned meta-memory compensation, applied to several warped feature levels.

    Args:
        in_channels: widths of the compensated levels, in the order of ``levels`` (official vox-256:
            512, 256, 128 at 32, 64, 128 px); each must be even (half is compensated).
        levels: indices into the warped features (fine to coarse, negative from the coarsest) that are
            compensated, in the order they are processed (official: the 32, 64 and 128 px features, coarsest
            first; the 256 px one is not compensated).
        num_kp: keypoints of the source (the style MLP takes ``2 * num_kp`` coordinates; official 15).
        mb_channel: memory width C (official ``--mb_channel 512``).
        mb_spatial: memory side S: S^2 slots (official ``--mb_spatial 32``).
        style_dim: width of the identity code (official 512), ``style_hidden`` the MLP's hidden width (128).
        attention_scale: the logit scale of the memory read-out (official 1/4).
        num_kernels, kernel_temperature, kernel_ratio: the dynamic convolution (official 4, 34, 0.25).
        noise, noise_seed: noise injection of the memory's StyleConv (see the module docstring).
        attention_backend: a :mod:`thkit.attention` backend name (default: the current default backend).
        record_internals: also return every intermediate (``memory_internals``: one dict per level with
            ``before``, ``feat``, ``query``, ``key``, ``value``, ``memory``, ``residual``, ``after``).
    """

    def __init__(self, in_channels: Sequence[int] = (512, 256, 128), levels: Sequence[int] = (-1, -2, -3),
                 num_kp: int = 15, mb_channel: int = 512, mb_spatial: int = 32, style_dim: int = 512,
                 style_hidden: int = 128, attention_scale: float = 0.25, num_kernels: int = 4,
                 kernel_temperature: float = 34.0, kernel_ratio: float = 0.25, noise: str = "auto",
                 noise_seed: int | None = None, attention_backend: str | None = None,
                 record_internals: bool = False):
        super().__init__()
        self.in_channels, self.levels = [int(c) for c in in_channels], [int(i) for i in levels]
        if len(self.in_channels) != len(self.levels) or not self.levels:
            raise ValueError(f"in_channels {self.in_channels} and levels {self.levels} must be non-empty and "
                             f"of the same length (one width per compensated level)")
        odd = [c for c in self.in_channels if c % 2]
        if odd:
            raise ValueError(f"in_channels must be even (half of each level is compensated), got {self.in_channels}")
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}")
        self.num_kp, self.mb_channel, self.mb_spatial = int(num_kp), int(mb_channel), int(mb_spatial)
        self.attention_scale = float(attention_scale)
        self.noise_seed = None if noise_seed is None else int(noise_seed)
        self.attention_backend = attention_backend
        self.record_internals = bool(record_internals)
        c = self.mb_channel
        memory = torch.empty(1, c, self.mb_spatial, self.mb_spatial)
        nn.init.kaiming_uniform_(memory, mode="fan_in", nonlinearity="relu")
        self.memory = nn.Parameter(memory)
        self.proj = nn.ModuleList(nn.Conv2d(w // 2, c, kernel_size=1) for w in self.in_channels)
        self.style_mlp = nn.Sequential(nn.Linear(c + 2 * self.num_kp, style_hidden), nn.ReLU(True),
                                       nn.Linear(style_hidden, style_dim))
        self.memory_conv = StyleConv(c, c, kernel_size=3, num_style_feat=style_dim, demodulate=True, noise=noise)
        self.key_value = DynamicConv2d(c, 2 * c, kernel_size=3, ratio=kernel_ratio, padding=1,
                                       num_kernels=num_kernels, temperature=kernel_temperature)
        self.query = nn.Conv2d(c, c, kernel_size=1)
        self.diff = nn.Conv2d(c, c, kernel_size=1)
        self.out_conv = nn.ModuleList(nn.Conv2d(c, w // 2, kernel_size=3, padding=1) for w in self.in_channels)
        self.out_norm = nn.ModuleList(nn.InstanceNorm2d(w // 2, affine=True) for w in self.in_channels)

    @property
    def noise(self) -> str:
        return self.memory_conv.noise

    @noise.setter
    def noise(self, mode: str) -> None:
        if mode not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {mode!r}")
        self.memory_conv.noise = mode

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, in_channels={self.in_channels}, memory=({self.mb_channel}, "
                f"{self.mb_spatial}x{self.mb_spatial}), noise={self.noise!r}, noise_seed={self.noise_seed}")

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.noise_seed is None or not self.memory_conv.draws_noise():
            return None
        g = torch.Generator(device=device)
        g.manual_seed(self.noise_seed)
        return g

    def compensate(self, feature: Tensor, index: int, kp_source: Tensor,
                   generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One level (``index`` into ``in_channels``): ``(compensated feature, internals)``."""
        b, width = feature.shape[:2]
        if width != self.in_channels[index]:
            raise ValueError(f"MemoryCompensator: level {self.levels[index]} has {width} channels, expected "
                             f"{self.in_channels[index]} (in_channels)")
        if kp_source.shape[1] != self.num_kp:
            raise ValueError(f"MemoryCompensator: built for num_kp={self.num_kp} source keypoints, got "
                             f"{kp_source.shape[1]} (set the compensator's num_kp)")
        even, odd = split_channels(feature)
        feat = self.proj[index](odd)
        code = torch.cat([F.adaptive_avg_pool2d(feat, 1).flatten(1), kp_source.reshape(b, -1)], dim=1)
        style = self.style_mlp(code)
        memory = self.memory_conv(self.memory.expand(b, -1, -1, -1), style, generator=generator)
        key, value = F.relu(self.key_value(feat, memory)).chunk(2, dim=1)
        query = F.relu(self.query(feat))
        h, w = feat.shape[2:]
        tokens = lambda t: t.flatten(2).transpose(1, 2).unsqueeze(2)  # noqa: E731  (B, HW, 1, C)
        read = attention(tokens(query), tokens(key), tokens(value), scale=self.attention_scale,
                         backend=self.attention_backend)
        residual = read.squeeze(2).transpose(1, 2).reshape(b, self.mb_channel, h, w)
        out = F.relu(self.diff(feat - residual)) + feat
        out = F.relu(self.out_norm[index](self.out_conv[index](out)))
        after = interleave_channels(even, out)
        internals = dict(before=feature, feat=feat, query=query, key=key, value=value, memory=memory,
                         residual=residual, after=after)
        return after, internals

    def forward(self, features: Sequence[Tensor], ctx: dict[str, Any]) -> dict[str, Any]:
        feats = list(features)
        n = len(feats)
        bad = [i for i in self.levels if not -n <= i < n]
        if bad:
            raise ValueError(f"MemoryCompensator: levels {bad} out of range for {n} warped features")
        kp = ctx["kp_source"]["value"]
        generator = self._generator(kp.device)
        values, feat_list, internals = [], [], []
        for j, level in enumerate(self.levels):
            feats[level], rec = self.compensate(feats[level], j, kp, generator)
            feat_list.append(rec["feat"])
            values.append(rec["value"])
            internals.append(rec)
        out: dict[str, Any] = {"features": feats, "memory_features": feat_list, "memory_values": values}
        if self.record_internals:
            out["memory_internals"] = internals
        return out

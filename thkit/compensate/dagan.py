"""DaGAN's depth-aware cross-modal attention (Hong et al., CVPR 2022, sec. 3.3 "Cross-modal attention").

The warped, occluded RGB feature is refined by an attention whose **queries come from the source depth** (encoded by
its own FOMM-style encoder: a 7x7 block and down blocks on the 1-channel depth map) and whose keys and values come
from the warped feature itself: ``out = gamma * softmax(q k^T) v + feat`` (official quirks: ReLU on q, k and v, no
``1/sqrt(d)`` scaling, ``gamma`` zero-initialised).  The attention itself goes through thkit's attention backends
(:func:`thkit.attention.attention`: xformers, torch SDPA or the math reference), so it never materialises the
``N x N`` matrix unless asked (``return_attention``).

The source depth is ``ctx['kp_source']['depth']`` when the keypoint detector computed one
(:class:`~thkit.motion.dagan.RGBDKeypointDetector`), else the compensator's own ``depth`` network (any ``encoder``
part whose first map is the depth, e.g. :class:`~thkit.encode.depth.MonodepthDepthNet`) run on the source: so the
part also fits into models whose keypoints know nothing of depth.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thkit.attention import attention, check_backend_name
from thkit.builder import build
from thkit.encode.fomm import FOMMEncoder
from thkit.interfaces import Compensator
from thkit.registry import COMPENSATORS

Tensor = torch.Tensor


@COMPENSATORS.register_module()
class DepthAwareAttention(Compensator):
    """Depth-aware cross-modal attention on the coarsest warped feature (DaGAN's ``AttnModule`` with the
    generator's ``src_first`` / ``src_down_blocks`` depth encoder).

    Args:
        channels: width of the warped feature it refines (DaGAN: ``min(max_features, block_expansion * 4)``).
        block_expansion, max_features, num_down_blocks, norm: the depth encoder's widths (as the generator's RGB
            encoder: its output must have ``channels`` channels at the warped feature's size).
        qk_ratio: the query/key width is ``channels // qk_ratio`` (official: 8).
        depth: optional depth network (an ``encoder`` part) for models whose keypoint detector gives no ``'depth'``.
        backend: attention backend name (``None``: the current default).
        return_attention: also return the ``(B, N, N)`` attention matrix under ``'attention'`` (N = h*w; costly at
            full size, for inspection and parity tests).

    Returns ``{'features': [..., refined coarsest], 'source_depth': (B, 1, H, W)}`` (+ ``'attention'``).
    """

    def __init__(self, channels: int, block_expansion: int = 64, max_features: int = 512, num_down_blocks: int = 2,
                 norm: str = "batch", qk_ratio: int = 8, depth: dict | None = None, backend: str | None = None,
                 return_attention: bool = False):
        super().__init__()
        self.channels = int(channels)
        enc_width = min(max_features, block_expansion * 2**num_down_blocks)
        if enc_width != self.channels:
            raise ValueError(f"the depth encoder (block_expansion={block_expansion}, max_features={max_features}, "
                             f"num_down_blocks={num_down_blocks}) ends with {enc_width} channels; the attention "
                             f"needs channels={self.channels}")
        if self.channels % qk_ratio or self.channels < qk_ratio:
            raise ValueError(f"channels={self.channels} must be a multiple of qk_ratio={qk_ratio}")
        self.depth_encoder = FOMMEncoder(in_channels=1, block_expansion=block_expansion, max_features=max_features,
                                         num_down_blocks=num_down_blocks, out_indices=(-1,), norm=norm)
        inner = self.channels // qk_ratio
        self.query_conv = nn.Conv2d(self.channels, inner, kernel_size=1)
        self.key_conv = nn.Conv2d(self.channels, inner, kernel_size=1)
        self.value_conv = nn.Conv2d(self.channels, self.channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.depth = build("encoder", depth, "depth") if depth is not None else None
        self.backend = None if backend is None else check_backend_name(backend, "DepthAwareAttention.backend")
        self.return_attention = bool(return_attention)

    def source_depth(self, ctx: dict[str, Any]) -> Tensor:
        """The source's depth map: the keypoint detector's, else this part's own depth network's."""
        depth = (ctx.get("kp_source") or {}).get("depth")
        if depth is not None:
            return depth
        if self.depth is None:
            raise ValueError("DepthAwareAttention needs the source depth: kp_source has no 'depth' (use a depth-aware "
                             "keypoint detector such as RGBDKeypointDetector) and the compensator has no depth= "
                             "network")
        return self.depth(ctx["source"])[0]

    def qkv(self, depth_feature: Tensor, feat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``relu`` of the query (from the depth feature), key and value (from the warped feature) convs."""
        return (F.relu(self.query_conv(depth_feature)), F.relu(self.key_conv(feat)), F.relu(self.value_conv(feat)))

    def attention_map(self, depth_feature: Tensor, feat: Tensor) -> Tensor:
        """The explicit ``(B, N, N)`` attention ``softmax_j(q_i . k_j)`` (rows: depth queries, row-major)."""
        q, k, _ = self.qkv(depth_feature, feat)
        return torch.softmax(torch.bmm(q.flatten(2).transpose(1, 2), k.flatten(2)), dim=-1)

    def attend(self, depth_feature: Tensor, feat: Tensor) -> Tensor:
        """``gamma * attention(q, k, v) + feat`` through the attention backend."""
        if depth_feature.shape[2:] != feat.shape[2:]:
            raise ValueError(f"the depth feature {tuple(depth_feature.shape)} and the warped feature "
                             f"{tuple(feat.shape)} must have the same size (check num_down_blocks)")
        b, c, h, w = feat.shape
        q, k, v = self.qkv(depth_feature, feat)
        tokens = lambda t: t.flatten(2).transpose(1, 2).unsqueeze(2)  # noqa: E731  (B, N, 1, C)
        out = attention(tokens(q), tokens(k), tokens(v), scale=1.0, backend=self.backend)
        out = out.squeeze(2).transpose(1, 2).reshape(b, c, h, w)
        return self.gamma * out + feat

    def forward(self, warped: Sequence[Tensor], ctx: dict[str, Any]) -> dict[str, Any]:
        feat = warped[-1]
        if feat.shape[1] != self.channels:
            raise ValueError(f"DepthAwareAttention expects the coarsest warped feature with {self.channels} channels, "
                             f"got {tuple(feat.shape)}")
        depth = self.source_depth(ctx)
        if depth.shape[0] != feat.shape[0]:  # a batch-1 source for a batch of driving frames
            depth = depth.expand(feat.shape[0], *depth.shape[1:])
        depth_feature = self.depth_encoder(depth)[-1]
        out: dict[str, Any] = {"features": [*warped[:-1], self.attend(depth_feature, feat)], "source_depth": depth}
        if self.return_attention:
            out["attention"] = self.attention_map(depth_feature, feat)
        return out

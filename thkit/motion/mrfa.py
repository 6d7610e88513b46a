"""MRFA's keypoint detector (Tao et al., "Learning Motion Refinement for Unsupervised Face Animation", NeurIPS 2023).

MRFA's default prior motion model (``prior_model: mtia``) detects keypoints and Jacobians with a TokenPose-style
detector: an HRNet stem (stride 4) whose feature map is cut into patches and read by a transformer together with
``K`` keypoint tokens and ``K`` Jacobian tokens (:class:`TokenPoseKeypointDetector`).  The dense motion that follows
is FOMM's (:class:`~thkit.motion.fomm.FirstOrderMotion`), so MRFA's prior is a recipe choice, not a new part.

Module names follow the official layout (``pre_feature.{conv1,bn1,conv2,bn2,layer1,transition1,stage2,transition2,
stage3}``, ``transformer.{keypoint_token,pos_embedding,patch_to_embedding,transformer.layers,mlp_head,
mlp_head_jacobian}``), so the converter is a renaming of the top-level prefix.

Quirks reproduced (parity fixture README sec. 11, quirk 1): HRNet fuse layers upsample with 1x1 conv + BN + nearest and
downsample with stride-2 3x3 convs; the last stage-3 module returns branch 0 only; patches are flattened
``(p1 p2 c)``, channel fastest; the fixed sine embedding (a frozen parameter, loaded, not recomputed) is added to the
image tokens before the first layer and again before every later one; attention has no qkv bias and scale
``(dim / heads) ** -0.5``; ``kp = 2 sigmoid(head(token_k)) - 1`` and the Jacobian is the row-major 2x2 of a linear head
of token ``K + k``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from thkit.interfaces import KeypointDetector
from thkit.registry import KEYPOINT_DETECTORS

Tensor = torch.Tensor

__all__ = ["HRNetBase", "TokenPoseTransformer", "TokenPoseKeypointDetector", "sine_position_embedding"]


# ---------------------------------------------------------------------------------------------------------
# HRNet (stages 1-3), official module names
# ---------------------------------------------------------------------------------------------------------
def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)


_BLOCKS = {"BASIC": _BasicBlock, "BOTTLENECK": _Bottleneck}


def _layer(block, inplanes: int, planes: int, blocks: int) -> nn.Sequential:
    down = None
    if inplanes != planes * block.expansion:
        down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, bias=False),
                             _bn(planes * block.expansion))
    layers = [block(inplanes, planes, down)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class _HighResolutionModule(nn.Module):
    """Parallel branches, then every output branch sums all branches resized to it (HRNet's exchange unit)."""

    def __init__(self, block, num_blocks: Sequence[int], in_channels: Sequence[int], channels: Sequence[int],
                 multi_scale_output: bool = True):
        super().__init__()
        n = len(channels)
        if not len(num_blocks) == len(in_channels) == n:
            raise ValueError(f"HRNet stage: {n} branches need as many NUM_BLOCKS ({list(num_blocks)}) and input widths "
                             f"({list(in_channels)})")
        self.num_branches = n
        self.branches = nn.ModuleList(_layer(block, in_channels[i], channels[i], num_blocks[i]) for i in range(n))
        self.out_channels = [c * block.expansion for c in channels]
        w = self.out_channels
        self.fuse_layers = None
        if n > 1:
            fuse = []
            for i in range(n if multi_scale_output else 1):
                row = []
                for j in range(n):
                    if j > i:
                        row.append(nn.Sequential(nn.Conv2d(w[j], w[i], 1, bias=False), _bn(w[i]),
                                                 nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                    elif j == i:
                        row.append(None)
                    else:
                        steps = []
                        for k in range(i - j):
                            last = k == i - j - 1
                            cout = w[i] if last else w[j]
                            mods = [nn.Conv2d(w[j], cout, 3, 2, 1, bias=False), _bn(cout)]
                            if not last:
                                mods.append(nn.ReLU(True))
                            steps.append(nn.Sequential(*mods))
                        row.append(nn.Sequential(*steps))
                fuse.append(nn.ModuleList(row))
            self.fuse_layers = nn.ModuleList(fuse)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            out.append(F.relu(y))
        return out


class _Stage(nn.Sequential):
    def forward(self, xs: list[Tensor]) -> list[Tensor]:  # type: ignore[override]
        for module in self:
            xs = module(xs)
        return xs


def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(None if c == pre[i] else nn.Sequential(
                nn.Conv2d(pre[i], c, 3, 1, 1, bias=False), _bn(c), nn.ReLU(True)))
        else:
            steps = []
            for j in range(i + 1 - len(pre)):
                cin = pre[-1]
                cout = c if j == i - len(pre) else cin
                steps.append(nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), _bn(cout), nn.ReLU(True)))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def _stage_cfg(cfg: dict, name: str) -> tuple:
    try:
        block = _BLOCKS[cfg.get("block", "BASIC").upper()]
        return (block, int(cfg.get("num_modules", 1)), [int(v) for v in cfg["num_blocks"]],
                [int(v) for v in cfg["num_channels"]])
    except KeyError as e:
        raise ValueError(f"HRNet {name} needs num_blocks and num_channels (and block BASIC or BOTTLENECK); "
                         f"missing or unknown {e}") from None


class HRNetBase(nn.Module):
    """HRNet stages 1-3 (stride 4; returns the highest-resolution branch), TokenPose-B's ``pre_feature``.

    ``stem_width``: the stem and stage-1 width (official 64, a literal; the stage-1 Bottlenecks output 4x it).
    ``stage2`` / ``stage3``: dicts with ``num_modules``, ``block`` (``'BASIC'``), ``num_blocks``, ``num_channels``.
    """

    def __init__(self, stage2: dict, stage3: dict, stem_width: int = 64, in_channels: int = 3):
        super().__init__()
        w = int(stem_width)
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(w)
        self.conv2 = nn.Conv2d(w, w, 3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(w)
        self.layer1 = _layer(_Bottleneck, w, w, 4)
        block2, n2, blocks2, ch2 = _stage_cfg(stage2, "stage2")
        ch2 = [c * block2.expansion for c in ch2]
        self.transition1 = _transition([4 * w], ch2)
        mods, cin = [], list(ch2)
        for _ in range(n2):
            mods.append(_HighResolutionModule(block2, blocks2, cin, _stage_cfg(stage2, "stage2")[3]))
            cin = mods[-1].out_channels
        self.stage2 = _Stage(*mods)
        block3, n3, blocks3, ch3 = _stage_cfg(stage3, "stage3")
        ch3x = [c * block3.expansion for c in ch3]
        self.transition2 = _transition(cin, ch3x)
        mods, cin = [], list(ch3x)
        for k in range(n3):
            mods.append(_HighResolutionModule(block3, blocks3, cin, ch3, multi_scale_output=k < n3 - 1))
            cin = mods[-1].out_channels
        self.stage3 = _Stage(*mods)
        self.out_channels = cin[0]

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        xs = [x if t is None else t(x) for t in self.transition1]
        ys = self.stage2(xs)
        xs = [ys[i] if t is None else t(ys[-1]) for i, t in enumerate(self.transition2)]
        return self.stage3(xs)[0]


# ---------------------------------------------------------------------------------------------------------
# TokenPose transformer (official names: Residual(PreNorm(fn)) -> layers.l.{0,1}.fn.{norm,fn})
# ---------------------------------------------------------------------------------------------------------
def sine_position_embedding(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """TokenPose's fixed 2-D sine embedding ``(1, h*w, dim)`` (y features first, then x)."""
    area = torch.ones(1, h, w)
    y = area.cumsum(1, dtype=torch.float32)
    x = area.cumsum(2, dtype=torch.float32)
    scale, eps, half = 2 * math.pi, 1e-6, dim // 2
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2).flatten(2).permute(0, 2, 1)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"TokenPose dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for t in self.to_qkv(x).chunk(3, -1))
        attn = (torch.einsum("bhid,bhjd->bhij", q, k) * self.scale).softmax(dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attn, v).transpose(1, 2).reshape(b, n, d)
        return self.to_out(out)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim),
                                 nn.Dropout(0.0))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class _Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([_Residual(_PreNorm(dim, _Attention(dim, heads))),
                           _Residual(_PreNorm(dim, _FeedForward(dim, mlp_dim)))]) for _ in range(depth))

    def forward(self, x: Tensor, num_tokens: int, pos: Tensor | None) -> Tensor:
        for idx, (attn, ff) in enumerate(self.layers):
            if idx > 0 and pos is not None:  # sine-full: the embedding again before every later layer
                x = torch.cat([x[:, :num_tokens], x[:, num_tokens:] + pos], dim=1)
            x = ff(attn(x))
        return x


class TokenPoseTransformer(nn.Module):
    """TokenPose-B's head: patches of the HRNet feature + ``2K`` learned tokens -> keypoints and Jacobians."""

    def __init__(self, feature_size: Sequence[int], patch_size: Sequence[int], num_kp: int, dim: int, depth: int,
                 heads: int, mlp_dim: int, channels: int, estimate_jacobian: bool = True):
        super().__init__()
        fh, fw = (int(v) for v in feature_size)
        ph, pw = (int(v) for v in patch_size)
        if fh % ph or fw % pw:
            raise ValueError(f"the {fh}x{fw} HRNet feature (image / 4) is not divisible into {ph}x{pw} patches")
        self.patch_size = (ph, pw)
        self.num_kp = num_kp
        self.num_tokens = 2 * num_kp if estimate_jacobian else num_kp
        self.keypoint_token = nn.Parameter(torch.zeros(1, 2 * num_kp, dim))
        nn.init.trunc_normal_(self.keypoint_token, std=0.02)
        self.pos_embedding = nn.Parameter(sine_position_embedding(fh // ph, fw // pw, dim), requires_grad=False)
        self.patch_to_embedding = nn.Linear(channels * ph * pw, dim)
        self.transformer = _Transformer(dim, depth, heads, mlp_dim)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2))
        self.mlp_head_jacobian = None
        if estimate_jacobian:
            self.mlp_head_jacobian = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4))
            with torch.no_grad():
                self.mlp_head_jacobian[1].weight.zero_()
                self.mlp_head_jacobian[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))

    def tokens(self, feature: Tensor) -> Tensor:
        """The tokens entering layer 0: ``2K`` keypoint/Jacobian tokens, then the embedded patches."""
        b, c, h, w = feature.shape
        ph, pw = self.patch_size
        x = feature.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 3, 5, 1)
        x = self.patch_to_embedding(x.reshape(b, (h // ph) * (w // pw), ph * pw * c))
        x = x + self.pos_embedding[:, : x.shape[1]]
        return torch.cat([self.keypoint_token.expand(b, -1, -1), x], dim=1)

    def forward(self, feature: Tensor) -> dict[str, Tensor]:
        x = self.transformer(self.tokens(feature), 2 * self.num_kp, self.pos_embedding)
        k = self.num_kp
        out = {"value": 2 * torch.sigmoid(self.mlp_head(x[:, :k])) - 1}
        if self.mlp_head_jacobian is not None:
            jac = self.mlp_head_jacobian(x[:, k:2 * k])
            out["jacobian"] = jac.reshape(jac.shape[0], k, 2, 2)
        return out


@KEYPOINT_DETECTORS.register_module()
class TokenPoseKeypointDetector(KeypointDetector):
    """MRFA's MTIA keypoint detector (TokenPose-B): HRNet (stride 4) + transformer over 4x4 patches.

    Args:
        num_kp: keypoints K (MRFA vox1: 10).
        image_size: the image side (px); the transformer reads the ``image_size / 4`` HRNet map (the builder hands the
            recipe's ``image_size``).
        dim, depth, heads, mlp_ratio: transformer width, layers, heads, MLP width / dim (vox1: 192, 12, 8, 3).
        patch_size: patch side on the HRNet map (4).
        stage2, stage3: HRNet stages (``num_modules``, ``block``, ``num_blocks``, ``num_channels``); vox1:
            1 x BASIC [4, 4] / [32, 64] and 4 x BASIC [4, 4, 4] / [32, 64, 128].
        stem_width: HRNet stem width (official literal 64; the parity fixture patches it).
        estimate_jacobian: predict Jacobians from K extra tokens.

    Returns ``{'value': (B, K, 2), 'jacobian': (B, K, 2, 2)}``.  No ImageNet normalisation (``DATA_PREPROCESS``
    False in every official config).
    """

    def __init__(self, num_kp: int = 10, image_size: int = 256, dim: int = 192, depth: int = 12, heads: int = 8,
                 mlp_ratio: int = 3, patch_size: int = 4, stage2: dict | None = None, stage3: dict | None = None,
                 stem_width: int = 64, estimate_jacobian: bool = True, in_channels: int = 3):
        super().__init__()
        if image_size % (4 * patch_size):
            raise ValueError(f"TokenPoseKeypointDetector: image_size={image_size} must be a multiple of "
                             f"4 x patch_size = {4 * patch_size}")
        stage2 = stage2 or dict(num_modules=1, block="BASIC", num_blocks=[4, 4], num_channels=[32, 64])
        stage3 = stage3 or dict(num_modules=4, block="BASIC", num_blocks=[4, 4, 4], num_channels=[32, 64, 128])
        self.num_kp = num_kp
        self.pre_feature = HRNetBase(stage2, stage3, stem_width, in_channels)
        side = image_size // 4
        self.transformer = TokenPoseTransformer([side, side], [patch_size, patch_size], num_kp, dim, depth, heads,
                                                dim * mlp_ratio, self.pre_feature.out_channels, estimate_jacobian)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return self.transformer(self.pre_feature(image))

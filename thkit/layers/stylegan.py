"""StyleGAN2 layers (Karras et al., CVPR 2020): equalised linear, modulated convolution, noise injection,
fused leaky ReLU.  MCNet modulates its meta-memory with one :class:`StyleConv` (Hong & Xu, ICCV 2023, eq. 3).

Numerically these are BasicSR's ``stylegan2_arch`` layers (the code MCNet bundles): demodulation with
``eps = 1e-8``, the modulation's bias initialised to 1, the activation ``sqrt(2) * leaky_relu(x + b, 0.2)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

#: noise modes of :class:`StyleConv`
NOISE_MODES = ("auto", "zero", "random")


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate: ``y = x (W * lr_mul / sqrt(in))^T + b * lr_mul``."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, bias_init_val: float = 0.0,
                 lr_mul: float = 1.0):
        super().__init__()
        self.in_channels, self.out_channels, self.lr_mul = in_channels, out_channels, float(lr_mul)
        self.scale = (1 / math.sqrt(in_channels)) * self.lr_mul
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels).div_(self.lr_mul))
        self.bias = nn.Parameter(torch.full((out_channels, ), float(bias_init_val))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.scale, bias=bias)


class FusedLeakyReLU(nn.Module):
    """``scale * leaky_relu(x + bias, negative_slope)`` with a learned per-channel bias (StyleGAN2)."""

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = 2**0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope, self.scale = float(negative_slope), float(scale)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.view((1, -1) + (1, ) * (x.dim() - 2))
        return self.scale * F.leaky_relu(x + bias, negative_slope=self.negative_slope)


class ModulatedConv2d(nn.Module):
    """Modulated (and demodulated) convolution, StyleGAN2 sec. 2.2, no bias, stride 1, 'same' padding.

    ``w'_{ijk} = s_i * w_{ijk} / sqrt(sum_{i,k} (s_i w_{ijk})^2 + eps)`` with the style ``s = A(style)``
    (:class:`EqualLinear`, bias initialised to 1); one grouped convolution per sample (BasicSR's form, so the
    official MCNet's rounding).  While exporting to ONNX the same map is written as StyleGAN2's unfused form,
    ``conv(x * s, w) * d`` with ``d_j = 1 / sqrt(sum_i s_i^2 sum_k w_{ijk}^2 + eps)``: the kernel stays a constant
    (an ONNX convolution needs a kernel of known shape, which a per-sample kernel built from ``x.shape`` is not),
    the numbers equal to float32 rounding (tests/test_export.py).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, eps: float = 1e-8):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.eps = bool(demodulate), float(eps)
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = EqualLinear(num_style_feat, in_channels, bias=True, bias_init_val=1.0)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.padding = kernel_size // 2

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if torch.onnx.is_in_onnx_export():
            return self._unfused(x, style)
        s = self.modulation(style).view(b, 1, c, 1, 1)
        weight = self.scale * self.weight * s  # (b, c_out, c_in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(b, self.out_channels, 1, 1, 1)
        weight = weight.view(b * self.out_channels, c, self.kernel_size, self.kernel_size)
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=self.padding, groups=b)
        return out.view(b, self.out_channels, *out.shape[2:4])

    def _unfused(self, x: Tensor, style: Tensor) -> Tensor:
        """The same map with a constant kernel: ``conv(x * s, w) * d`` (class docstring)."""
        s = self.modulation(style)  # (b, c_in)
        weight = self.scale * self.weight[0]  # (c_out, c_in, k, k)
        out = F.conv2d(x * s[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            energy = weight.pow(2).sum([2, 3])  # (c_out, c_in)
            out = out * torch.rsqrt(s.pow(2) @ energy.t() + self.eps)[:, :, None, None]
        return out


class StyleConv(nn.Module):
    """Modulated conv -> noise injection -> fused leaky ReLU (StyleGAN2's synthesis layer).

    Noise injection adds ``weight * n`` with a learned scalar ``weight`` (zero-initialised) and per-pixel
    Gaussian noise ``n`` (B, 1, H, W).  BasicSR's layer (and so the official MCNet) draws fresh noise on every
    call, in eval too; here that is a choice (``noise``):

    * ``'auto'`` (default): fresh noise in training (as officially), zero noise in eval, so inference is
      deterministic (``weight * 0``);
    * ``'random'``: fresh noise always (the official inference);
    * ``'zero'``: never any noise.

    With ``generator`` (a :class:`torch.Generator`) given to :meth:`forward`, the noise is drawn from it
    (seeded, reproducible noise); an explicit ``noise`` tensor overrides all of this.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, noise: str = "auto"):
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}")
        self.noise = noise
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, kernel_size, num_style_feat, demodulate)
        self.noise_weight = nn.Parameter(torch.zeros(1))
        self.activate = FusedLeakyReLU(out_channels)

    def draws_noise(self) -> bool:
        """Whether :meth:`forward` adds random noise in the current mode."""
        return self.noise == "random" or (self.noise == "auto" and self.training)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        out = self.modulated_conv(x, style)
        if noise is None and self.draws_noise():
            b, _, h, w = out.shape
            noise = torch.randn((b, 1, h, w), generator=generator, device=out.device, dtype=out.dtype)
        if noise is None:
            out = out + self.noise_weight * torch.zeros((), dtype=out.dtype, device=out.device)
        else:
            out = out + self.noise_weight * noise
        return self.activate(out)

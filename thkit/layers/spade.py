"""Spatially-adaptive normalisation (SPADE; Park, Liu, Wang, Zhu, "Semantic Image Synthesis with Spatially-Adaptive
Normalization", CVPR 2019, sec. 3 eq. 1) and the SPADE residual block (sec. 3, Fig. 4).

SPADE normalises a feature without learned affine parameters and then modulates it with a per-pixel scale and shift
predicted from a label map: ``out = norm(x) * (1 + gamma(m)) + beta(m)``, where ``m`` is the label map resized
(nearest) to the feature's size and ``gamma``, ``beta`` are 3x3 convs on a shared 3x3 conv + ReLU.  The residual
block is ``x_s + conv_1(act(SPADE_1(conv_0(act(SPADE_0(x))))))`` with LeakyReLU(0.2) and, when the widths differ, a
learned shortcut ``x_s = conv_s(SPADE_s(x))`` (1x1, no bias); its convs may be spectrally normalised.

Module names (``param_free_norm``, ``mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``; ``conv_0``, ``conv_1``,
``conv_s``, ``norm_0``, ``norm_1``, ``norm_s``) follow the reference implementation (NVlabs/SPADE), which DaGAN's
``modules/util.py`` (``SPADE``, ``SPADEResnetBlock``) reuses, so official checkpoints convert one to one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def _param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    raise ValueError(f"unknown SPADE norm {kind!r}; expected 'instance' (DaGAN) or 'batch'")


class SPADE(nn.Module):
    """SPADE normalisation (eq. 1): parameter-free norm, then ``* (1 + gamma(m)) + beta(m)``.

    Args:
        channels: the normalised feature's channels.
        label_channels: the label map's channels.
        hidden_channels: width of the shared conv (reference: 128).
        norm: the parameter-free norm, ``'instance'`` (DaGAN's ``spadespectralinstance``) or ``'batch'``.
        kernel_size: of the three convs (reference: 3).
    """

    def __init__(self, channels: int, label_channels: int, hidden_channels: int = 128, norm: str = "instance",
                 kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.param_free_norm = _param_free_norm(norm, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden_channels, kernel_size, padding=pad),
                                        nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden_channels, channels, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden_channels, channels, kernel_size, padding=pad)

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        normalized = self.param_free_norm(x)
        actv = self.mlp_shared(F.interpolate(label, size=x.shape[2:], mode="nearest"))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """SPADE residual block (Fig. 4): two SPADE -> LeakyReLU(0.2) -> 3x3 conv steps plus a shortcut.

    Args:
        in_channels, out_channels: block widths; the middle width is their minimum, and the shortcut is learned
            (SPADE -> 1x1 conv without bias) when they differ.
        label_channels, hidden_channels, norm: the SPADE layers' (see :class:`SPADE`).
        spectral_norm: spectrally normalise the convs (DaGAN: yes).  Old-style ``torch.nn.utils.spectral_norm``
            (keys ``weight_orig``, ``weight_u``, ``weight_v``, as the official checkpoints): one power iteration per
            training forward, none in eval.
    """

    def __init__(self, in_channels: int, out_channels: int, label_channels: int, hidden_channels: int = 128,
                 norm: str = "instance", spectral_norm: bool = True):
        super().__init__()
        self.learned_shortcut = in_channels != out_channels
        middle = min(in_channels, out_channels)
        sn = nn.utils.spectral_norm if spectral_norm else (lambda m: m)
        self.conv_0 = sn(nn.Conv2d(in_channels, middle, kernel_size=3, padding=1))
        self.conv_1 = sn(nn.Conv2d(middle, out_channels, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False))
        self.norm_0 = SPADE(in_channels, label_channels, hidden_channels, norm)
        self.norm_1 = SPADE(middle, label_channels, hidden_channels, norm)
        if self.learned_shortcut:
            self.norm_s = SPADE(in_channels, label_channels, hidden_channels, norm)

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        x_s = self.conv_s(self.norm_s(x, label)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, label), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, label), 0.2))
        return x_s + dx

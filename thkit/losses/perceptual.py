"""Multi-scale (image-pyramid) VGG-19 perceptual loss (FOMM sec. 3.3; TPSMM sec. 3.3; MRFA; SMAC;
Johnson et al. 2016 / Wang et al. 2018).

For each scale ``s`` of an anti-aliased image pyramid and each VGG-19 slice ``i`` (relu1_1 ... relu5_1),

    L_P = weight * sum_s sum_i w_i * mean |N_i(D_s(prediction)) - N_i(D_s(target))|

with the target's features detached.  FOMM, TPSMM and MRFA use ``w = [10] * 5`` on scales
``[1, 0.5, 0.25, 0.125]``; SMAC uses ``w = [1] * 5``.

The network is torchvision's ``vgg19(weights=None).features`` sliced at relu5_1 (or earlier); its weights
come from a **local file** (a torchvision ``vgg19`` state dict, i.e. torchvision's
``VGG19_Weights.IMAGENET1K_V1``); nothing is downloaded.  Without a file the network is random, which is
only accepted silently in tests (``THKIT_TESTING=1``) or with ``allow_random=True``.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from thkit.errors import CheckpointError
from thkit.layers import AntiAliasInterpolation2d
from thkit.losses._base import Loss, check_same_shape
from thkit.registry import LOSSES
from thkit.value_range import as_range, to_unit

Tensor = torch.Tensor
logger = logging.getLogger(__name__)

#: where torchvision publishes the ImageNet VGG-19 (``torchvision.models.VGG19_Weights.IMAGENET1K_V1.url``)
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
#: environment variable naming the weights file when a recipe gives none
VGG19_ENV = "THKIT_VGG19_WEIGHTS"

#: end index (exclusive) in torchvision's vgg19 ``features`` of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG19_SLICE_ENDS = (2, 7, 12, 21, 30)
#: the image pyramid of FOMM, TPSMM, MRFA and SMAC, and FOMM's per-slice weights (the loss's defaults)
PYRAMID_SCALES = (1.0, 0.5, 0.25, 0.125)
FOMM_LAYER_WEIGHTS = (10.0,) * 5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingWeightsError(CheckpointError, FileNotFoundError):
    """A weights file a loss needs is not there (the message says where it is published)."""


def vgg19_layers(upto: int = VGG19_SLICE_ENDS[-1]) -> nn.Sequential:
    """torchvision's ``vgg19(weights=None).features[:upto]``, built on the meta device: the layer list (module
    indices as in torchvision, so ``features.<i>.weight`` of its state dict is layer ``i``) without memory or
    initialisation; give it tensors with :func:`_materialise`."""
    with torch.device("meta"):
        return torchvision.models.vgg19(weights=None).features[:upto]


def _materialise(layers: nn.Sequential, state: Mapping[str, Tensor] | None) -> nn.Sequential:
    """Give the meta ``layers`` real weights as **non-persistent buffers** (``<i>.weight``, ``<i>.bias``): from
    ``state`` (``{'<i>.weight': ...}``), else torchvision's VGG initialisation (kaiming normal, fan_out, zero
    bias), drawn conv by conv in order.  ``nn.Conv2d.forward`` reads ``self.weight`` whether it is a parameter
    or a buffer, so the layers run unchanged."""
    for i, m in enumerate(layers):
        if not isinstance(m, nn.Conv2d):
            continue
        if state is not None:
            w, b = state[f"{i}.weight"].clone(), state[f"{i}.bias"].clone()
        else:
            w = torch.empty(m.weight.shape)
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
            b = torch.zeros(m.bias.shape)
        del m.weight, m.bias
        m.register_buffer("weight", w, persistent=False)
        m.register_buffer("bias", b, persistent=False)
    return layers


def missing_vgg_message(path: str | os.PathLike | None) -> str:
    where = f"not found: {path}" if path is not None else "not given"
    return (
        f"VGG-19 weights file {where}. The perceptual loss needs torchvision's ImageNet VGG-19 "
        f"(VGG19_Weights.IMAGENET1K_V1), published at {VGG19_URL} (file vgg19-dcbb9e9d.pth). That file already "
        f"is a torchvision vgg19 state dict ('features.0.weight', ...): download it on a machine with internet "
        f"and pass its path as vgg_weights='.../vgg19-dcbb9e9d.pth' (or set {VGG19_ENV}). Equivalent conversion: "
        f"python -c \"import torch, torchvision; torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1')"
        f".state_dict(), 'vgg19.pth')\". thkit never downloads weights itself."
    )


def load_vgg19_features_state(path: str | os.PathLike, upto: int = VGG19_SLICE_ENDS[-1]) -> dict[str, Tensor]:
    """Read a torchvision ``vgg19`` state dict from ``path`` -> ``{'<index>.weight'|'<index>.bias': tensor}``.

    Accepts the full model state dict (``features.*`` and ``classifier.*``; the classifier is ignored), a
    ``features``-only state dict (keys ``'0.weight'``), or either one under a ``'state_dict'`` key.  Only the
    layers below ``upto`` are returned; a missing one raises :class:`CheckpointError` naming it.
    """
    from thkit.checkpoint import torch_load

    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(missing_vgg_message(p))
    obj = torch_load(p)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a torchvision vgg19 state dict, got {type(obj).__name__}")
    prefix = "features." if any(str(k).startswith("features.") for k in obj) else ""
    out: dict[str, Tensor] = {}
    missing = []
    for i, layer in enumerate(vgg19_layers(upto)):
        if not isinstance(layer, nn.Conv2d):
            continue
        for name, shape in (("weight", tuple(layer.weight.shape)), ("bias", tuple(layer.bias.shape))):
            key = f"{prefix}{i}.{name}"
            if key not in obj:
                missing.append(key)
                continue
            t = obj[key]
            if not isinstance(t, Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise CheckpointError(f"{p}: {key} should be a tensor of shape {shape}, got {got} "
                                      f"(is this a torchvision vgg19 state dict?)")
            out[f"{i}.{name}"] = t.float()
    if missing:
        raise CheckpointError(f"{p} is not a torchvision vgg19 state dict: missing {', '.join(missing)}")
    return out


def random_vgg_allowed(allow_random: bool = False) -> bool:
    """Random VGG weights are fine in tests (``THKIT_TESTING=1``) or when asked for explicitly."""
    return bool(allow_random) or os.environ.get("THKIT_TESTING", "") == "1"


class VGG19Features(nn.Module):
    """Frozen VGG-19 ``features`` up to relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (torchvision's layout).

    ``forward(x)`` takes an ImageNet-normalised batch and returns the outputs at the first ``num_slices`` of
    those ReLUs.  ``self.features`` is torchvision's ``vgg19(weights=None).features`` sliced after the last
    ReLU used (:func:`vgg19_layers`), with the convolution weights as **non-persistent buffers**: they follow
    ``.to(device)`` but are not part of thkit checkpoints (the VGG is a fixed external asset, loaded from its
    own file) and never receive gradients.  Buffer ``features.{i}.weight`` is torchvision's
    ``features.{i}.weight`` (the same key).

    Args:
        weights: path of a torchvision vgg19 state dict; ``None``: ``$THKIT_VGG19_WEIGHTS`` if set, else random
            weights (see :func:`random_vgg_allowed`; otherwise a loud warning).
        allow_random: accept random weights without a warning.
        num_slices: how many slices to compute (1..5).
    """

    def __init__(self, weights: str | os.PathLike | None = None, allow_random: bool = False, num_slices: int = 5):
        super().__init__()
        if not 1 <= num_slices <= 5:
            raise ValueError(f"num_slices must be 1..5, got {num_slices}")
        self.num_slices = num_slices
        upto = VGG19_SLICE_ENDS[num_slices - 1]
        if weights is None and os.environ.get(VGG19_ENV):
            weights = os.environ[VGG19_ENV]
        state = load_vgg19_features_state(weights, upto) if weights is not None else None
        self.features = _materialise(vgg19_layers(upto), state)
        self.weights_path = None if weights is None else str(weights)
        self.pretrained = weights is not None
        if weights is None:
            if random_vgg_allowed(allow_random):
                logger.info("VGG-19 perceptual network uses random weights (tests / allow_random=True)")
            else:
                msg = ("PERCEPTUAL LOSS IS MEANINGLESS: VGG-19 has RANDOM weights because no weights file was "
                       "given. " + missing_vgg_message(None) + " Pass allow_random=True to accept this on purpose.")
                logger.warning(msg)
                warnings.warn(msg, stacklevel=3)

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}, weights={self.weights_path or 'random'}"

    def forward(self, x: Tensor) -> list[Tensor]:
        ends = set(VGG19_SLICE_ENDS[: self.num_slices])
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i + 1 in ends:
                out.append(x)
        return out


def pyramid_level_size(height: int, width: int, scale: float, mode: str = "slice") -> tuple[int, int]:
    """Height and width of an image at pyramid ``scale`` (``'slice'``: ``[::1/s]``; ``'nearest'``:
    ``F.interpolate(scale_factor=s)``)."""
    if scale == 1:
        return height, width
    if mode == "slice":
        step = round(1 / scale)
        return math.ceil(height / step), math.ceil(width / step)
    return math.floor(height * scale), math.floor(width * scale)


def vgg_min_size(num_slices: int) -> int:
    """Smallest image side VGG-19 takes up to slice ``num_slices`` (relu_k_1 comes after k - 1 max-pools)."""
    return 2 ** (num_slices - 1)


def slices_used(layer_weights: Sequence[float]) -> int:
    """How many VGG-19 slices a weight list needs: up to the last non-zero weight (at least one)."""
    used = [i for i, w in enumerate(layer_weights) if float(w) != 0]
    return (used[-1] + 1) if used else 1


def scales_that_fit(size: int, scales: Sequence[float] = PYRAMID_SCALES,
                    layer_weights: Sequence[float] = FOMM_LAYER_WEIGHTS, pyramid_mode: str = "slice") -> list[float]:
    """The pyramid scales at which a ``size`` x ``size`` image is still large enough for the VGG slices that
    ``layer_weights`` use (what :class:`PerceptualPyramidLoss` checks), e.g. at 64 px all four scales with
    relu1_1 only, ``[1, 0.5, 0.25]`` up to relu5_1."""
    need = vgg_min_size(slices_used(layer_weights))
    return [float(s) for s in scales if min(pyramid_level_size(size, size, float(s), pyramid_mode)) >= need]


def _scales_for_size(size: int, scales: Sequence[float], layer_weights: Sequence[float], mode: str) -> list[float]:
    """:func:`scales_that_fit`, or a ``ValueError`` naming the smallest image size that keeps a scale."""
    if size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {size}")
    if not scales or any(not 0 < float(s) <= 1 for s in scales):
        return list(scales)  # ImagePyramid names what is wrong with them
    fit = scales_that_fit(size, scales, layer_weights, mode)
    if not fit:
        n = slices_used(layer_weights)
        need = vgg_min_size(n)
        top = max(float(s) for s in scales)
        least = next(k for k in range(need, need * 4096) if min(pyramid_level_size(k, k, top, mode)) >= need)
        raise ValueError(f"image_size={size} px: no pyramid scale of {[float(s) for s in scales]} leaves the image "
                         f"the {need} px that VGG-19 needs up to relu{n}_1; use images of at least {least} px, "
                         f"larger scales or fewer layer_weights")
    return fit


class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid (FOMM ``ImagePyramide``): ``forward(x) -> [D_s(x) for s in scales]``.

    ``mode='slice'`` (FOMM, SMAC, MRFA's FOMM code) or ``'nearest'`` (TPSMM), see
    :class:`~thkit.layers.AntiAliasInterpolation2d`.  The kernels are not saved in state dicts.
    """

    def __init__(self, scales: Sequence[float], channels: int = 3, mode: str = "slice"):
        super().__init__()
        if not scales:
            raise ValueError("scales must list at least one scale, e.g. [1, 0.5, 0.25, 0.125]")
        for s in scales:
            if not 0 < float(s) <= 1:
                raise ValueError(f"pyramid scales must be in (0, 1], got {s}")
            if mode == "slice" and abs(1 / float(s) - round(1 / float(s))) > 1e-9:
                raise ValueError(f"mode='slice' needs scales 1/n, got {s}")
        self.scales = [float(s) for s in scales]
        self.downs = nn.ModuleList(AntiAliasInterpolation2d(channels, s, mode=mode, persistent=False)
                                   for s in self.scales)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [down(x) for down in self.downs]


@LOSSES.register_module()
class PerceptualPyramidLoss(Loss):
    """Pyramid VGG-19 perceptual loss (FOMM sec. 3.3 "reconstruction loss", Johnson et al. 2016).

    ``L = weight * sum_{scale} sum_{i} layer_weights[i] * mean |VGG_i(D_s(pred)) - VGG_i(D_s(target))|``
    (target features detached).  Inputs: ``pred`` <- ``prediction``, ``target`` <- ``driving``.

    Args:
        weight: overall weight (1 when the per-layer weights carry the scale, as in FOMM's ``[10] * 5``).
        layer_weights: weights of relu1_1 ... relu5_1 (FOMM/TPSMM/MRFA ``[10] * 5``, SMAC ``[1] * 5``); trailing
            zero weights skip the deeper VGG slices.
        scales: pyramid scales (``[1, 0.5, 0.25, 0.125]`` in all four methods).
        image_size: the side of the images the loss will see (the builder hands it the recipe's): only the
            ``scales`` at which such an image is still large enough for the VGG slices used are kept
            (:func:`scales_that_fit`); ``None``: all of them, checked at each call.
        pyramid_mode: ``'slice'`` (FOMM, SMAC) or ``'nearest'`` (TPSMM), the anti-aliased subsampling.
        input_range: value range of the images given to the loss (``(0, 1)`` FOMM/TPSMM, ``(-1, 1)`` SMAC); they
            are mapped to [0, 1] (before the pyramid) and then ImageNet-normalised.
        official_smac_range_quirk: reproduce the official SMAC code, which feeds its [-1, 1] images straight
            into the ImageNet-normalised VGG (no mapping to [0, 1]; the pyramid runs on the raw input).  Off by
            default; only for parity runs.
        vgg_weights: local path of a torchvision vgg19 state dict (``vgg19-dcbb9e9d.pth``); see
            :class:`VGG19Features` for ``None``.
        allow_random: accept random VGG weights without the warning.
        num_channels: image channels (3).
    """

    default_inputs = {"pred": "prediction", "target": "driving"}

    def __init__(self, weight: float = 1.0, layer_weights: Sequence[float] = FOMM_LAYER_WEIGHTS,
                 scales: Sequence[float] = PYRAMID_SCALES, pyramid_mode: str = "slice",
                 input_range: Sequence[float] = (0.0, 1.0), official_smac_range_quirk: bool = False,
                 vgg_weights: str | os.PathLike | None = None, allow_random: bool = False, num_channels: int = 3,
                 image_size: int | None = None):
        super().__init__(weight)
        layer_weights = [float(w) for w in layer_weights]
        if not 1 <= len(layer_weights) <= 5:
            raise ValueError(f"layer_weights needs 1..5 entries (relu1_1..relu5_1), got {len(layer_weights)}")
        if num_channels != 3:
            raise ValueError(f"VGG-19 takes RGB images: num_channels must be 3, got {num_channels}")
        if image_size is not None:
            scales = _scales_for_size(int(image_size), scales, layer_weights, pyramid_mode)
        self.layer_weights = layer_weights
        self.num_slices = slices_used(layer_weights)
        self.input_range = as_range(input_range)
        self.official_smac_range_quirk = bool(official_smac_range_quirk)
        self.pyramid = ImagePyramid(scales, num_channels, mode=pyramid_mode)
        self.vgg = VGG19Features(vgg_weights, allow_random=allow_random, num_slices=self.num_slices)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def scales(self) -> list[float]:
        return self.pyramid.scales

    def to_unit_range(self, x: Tensor) -> Tensor:
        """Map ``input_range`` to [0, 1] (the identity under ``official_smac_range_quirk``)."""
        if self.official_smac_range_quirk:
            return x
        return to_unit(x, self.input_range)

    def _check_size(self, x: Tensor) -> None:
        need = vgg_min_size(self.num_slices)
        for s, down in zip(self.scales, self.pyramid.downs):
            h, w = pyramid_level_size(x.shape[2], x.shape[3], s, down.mode)
            if min(h, w) < need:
                raise ValueError(
                    f"perceptual loss: a {x.shape[2]}x{x.shape[3]} image is {h}x{w} at pyramid scale {s}; VGG-19 up "
                    f"to slice {self.num_slices} needs at least {need}x{need} (use larger images or fewer scales)")

    def features(self, x: Tensor) -> list[list[Tensor]]:
        """VGG features of every pyramid level: ``[scale][slice]`` (what the loss compares)."""
        x = self.to_unit_range(x)
        return [self.vgg((level - self.mean) / self.std) for level in self.pyramid(x)]

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        check_same_shape(pred, target, "PerceptualPyramidLoss(pred, target)")
        if pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f"PerceptualPyramidLoss expects (B, 3, H, W) images, got {tuple(pred.shape)}")
        self._check_size(pred)
        with torch.no_grad():
            target_feats = self.features(target)
        pred_feats = self.features(pred)
        total = pred.new_zeros(())
        for fp, ft in zip(pred_feats, target_feats):
            for w, a, b in zip(self.layer_weights, fp, ft):
                if w != 0:
                    total = total + w * (a - b).abs().mean()
        return self.weight * total

"""The interface of every component kind.

A registered part of a kind should subclass the kind's base class below, but a plugin need not: what
:func:`check_part` verifies is structural (the methods and attributes listed in ``contract_attrs``),
and :func:`check_output` verifies the keys a call returns (``contract_outputs``).  ``thkit build`` runs
both and names what is missing.

Data conventions (the same as the FOMM family's official code, so converted weights behave the same):

* images are ``(B, C, H, W)`` float tensors; the value range is part of a recipe (``[0, 1]`` for FOMM and
  TPSMM, ``[-1, 1]`` for SMAC);
* keypoints are a dict ``{'value': (B, K, 2), 'jacobian': (B, K, 2, 2) (optional)}``, ``(x, y)`` in
  ``[-1, 1]`` (x = column);
* a flow (``deformation``) is ``(B, h, w, 2)`` in :func:`torch.nn.functional.grid_sample` coordinates:
  for each output (driving) pixel, where to sample the source (backward warp);
* occlusion maps are ``(B, 1, h, w)`` in ``[0, 1]`` (1 = visible in the source), given as a list ordered
  coarse to fine;
* encoder features are a list ordered **fine to coarse** (increasing stride, as timm's ``features_only``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from thkit.errors import InterfaceError

Tensor = torch.Tensor


class Part(nn.Module):
    """Common base: a registered part that declares its contract."""

    #: attributes (or methods) a part of this kind must have
    contract_attrs: tuple[str, ...] = ("forward",)
    #: keys the main call must return (for dict-returning kinds)
    contract_outputs: tuple[str, ...] = ()


class KeypointDetector(Part):
    """``forward(image) -> {'value': (B, K, 2), 'jacobian'?: (B, K, 2, 2)}``; ``num_kp`` = K."""

    contract_attrs = ("forward", "num_kp")
    contract_outputs = ("value",)


class MotionEstimator(Part):
    """``forward(source, kp_source, kp_driving, driving=None) -> dict``.

    Returns at least ``deformation`` (B, h, w, 2) and ``occlusion_map`` (a list, coarse to fine, possibly
    empty when the estimator predicts no occlusion).  Extra keys (masks, sparse motions, heatmaps) are kept
    in the model output for losses and visualisation.

    Optional: ``prepare_source(source, kp_source) -> dict`` returns what depends on the source only (e.g. the
    downsampled source); :class:`~thkit.models.talking_head.TalkingHeadModel` then computes it once per
    source in ``encode_source`` and passes it back as ``forward(..., source_cache=...)`` (it may have batch 1
    for a batch of driving keypoints).  Estimators without it are called without ``source_cache``.
    """

    contract_attrs = ("forward",)
    contract_outputs = ("deformation", "occlusion_map")


class Warper(Part):
    """``forward(feature, deformation, occlusion=None) -> warped feature``; ``warp_image`` for images.

    ``align_corners`` is a setting, not a constant: FOMM's released weights were trained with torch 1.0
    semantics (``True``), TPSMM passes ``True``, official code run on today's torch uses ``False``.
    """

    contract_attrs = ("forward", "warp_image", "align_corners")


class Encoder(Part):
    """``forward(image) -> list[Tensor]`` (fine to coarse); ``out_channels`` lists their widths."""

    contract_attrs = ("forward", "out_channels")


class Compensator(Part):
    """``forward(warped, ctx) -> {'features': list[Tensor], ...}``.

    ``warped`` are the warped, occluded encoder features (fine to coarse); ``ctx`` is the
    :class:`GenerationContext` (source, keypoints, motion dict, raw encoder features, the warper).  A
    compensator may refine the flow; it returns refined flows under ``deformation_list``.  One that warps the
    raw features itself (with the flows it refines) sets ``warps_features = True``: the model then skips its
    own warping, passes ``warped=None`` and takes ``warped_features`` from the compensator's output.
    """

    contract_attrs = ("forward",)
    contract_outputs = ("features",)
    #: the compensator warps ``ctx['features']`` itself; the model does not pre-warp them
    warps_features: bool = False


class Decoder(Part):
    """``forward(features, ctx) -> {'prediction': (B, C, H, W), ...}``."""

    contract_attrs = ("forward",)
    contract_outputs = ("prediction",)


class Discriminator(Part):
    """``forward(image, kp=None) -> {'feature_maps': list[Tensor], 'prediction_map': Tensor}`` per scale."""

    contract_attrs = ("forward",)


class Codebook(Part):
    """A vector-quantised codebook: ``forward(z, codes=None) -> {'quantized', 'indices', 'loss', ...}``."""

    contract_attrs = ("forward", "num_codes", "dim")
    contract_outputs = ("quantized", "indices")


class CodeAllocation:
    """Which code indices each scale may use: ``indices(scale, num_scales, num_codes) -> LongTensor``."""

    contract_attrs = ("indices",)
    contract_outputs: tuple[str, ...] = ()


class AttentionBackend:
    """``__call__(q, k, v, mask=None, scale=None) -> out`` with ``(B, M, H, D)`` layout; ``available()``."""

    contract_attrs = ("__call__", "available")
    contract_outputs: tuple[str, ...] = ()


class TalkingHeadModelBase(Part):
    """A complete generator: ``forward(source, driving) -> {'prediction', ...}``."""

    contract_attrs = ("forward",)
    contract_outputs = ("prediction",)


class LossModule(Part):
    """A training loss: returns a scalar tensor (or a dict of named scalars)."""


class MetricBase:
    """An evaluation metric (see :mod:`thkit.metrics`)."""

    contract_attrs: tuple[str, ...] = ()
    contract_outputs: tuple[str, ...] = ()


class DatasetBase:
    """A dataset of (source, driving) pairs (see :mod:`thkit.datasets`)."""

    contract_attrs = ("__getitem__", "__len__")
    contract_outputs: tuple[str, ...] = ()


class GenerationContext(dict):
    """What the model hands to compensators and decoders (a dict, documented keys).

    ``source`` (B,C,H,W), ``kp_source``, ``kp_driving``, ``motion`` (the motion estimator's dict),
    ``features`` (raw encoder features, fine to coarse), ``warper``, ``encoder`` (the model's encoder, e.g.
    for a compensator whose training targets are features of the driving frame), ``deformed`` (the source
    warped by the flow at image size), and ``driving`` when it is known (training).
    """


def _interface_for(kind: str):
    from thkit.registry import kind_of

    return kind_of(kind).interface_class()


def check_part(kind: str, obj: Any, where: str = "") -> None:
    """Raise :class:`InterfaceError` naming each attribute or method ``obj`` lacks for ``kind``."""
    iface = _interface_for(kind)
    missing = [a for a in iface.contract_attrs if not hasattr(obj, a)]
    if missing:
        name = type(obj).__name__
        raise InterfaceError(
            f"{where + ': ' if where else ''}{name} does not satisfy the {kind!r} interface "
            f"({iface.__name__}): missing {', '.join(missing)}"
        )


def check_output(kind: str, out: Any, where: str = "") -> None:
    """Raise :class:`InterfaceError` if a call's output lacks a key the kind promises."""
    iface = _interface_for(kind)
    if not iface.contract_outputs:
        return
    if not isinstance(out, Mapping):
        raise InterfaceError(
            f"{where + ': ' if where else ''}a {kind!r} part must return a dict with "
            f"{', '.join(iface.contract_outputs)}; got {type(out).__name__}"
        )
    missing = [k for k in iface.contract_outputs if k not in out]
    if missing:
        raise InterfaceError(
            f"{where + ': ' if where else ''}output of a {kind!r} part lacks {', '.join(missing)} "
            f"(has {', '.join(map(str, out)) or 'nothing'})"
        )

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

Optional hooks are declared on the base classes with their defaults (``MotionEstimator.prepare_source``,
``Compensator.warps_features``, ``CodeAllocation.codes``, ``Discriminator.uses_keypoints``,
``Part.loss_inputs``).  Generic code calls them through the helpers at the end of this module
(:func:`prepare_source`, :func:`warps_features`, :func:`allocation_codes`, :func:`discriminate`,
:func:`loss_inputs`), which use the default for a plugin part that does not subclass the base and lacks
the hook.
"""
from __future__ import annotations

import inspect
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

    def loss_inputs(self) -> dict[str, Any]:
        """Extra entries this part offers the training losses' namespace (:mod:`thkit.losses.bundle`), e.g. a
        sub-network a loss runs again on other inputs.  The trainer merges those of the generator and of its
        direct parts; a key the step already has is not replaced.  Default: none."""
        return {}


class KeypointDetector(Part):
    """``forward(image) -> {'value': (B, K, 2), 'jacobian'?: (B, K, 2, 2)}``; ``num_kp`` = K."""

    contract_attrs = ("forward", "num_kp")
    contract_outputs = ("value",)


class MotionEstimator(Part):
    """``forward(source, kp_source, kp_driving, driving=None) -> dict``.

    Returns at least ``deformation`` (B, h, w, 2) and ``occlusion_map`` (a list, coarse to fine, possibly
    empty when the estimator predicts no occlusion).  Extra keys (masks, sparse motions, heatmaps) are kept
    in the model output for losses and visualisation.

    Optional hook :meth:`prepare_source`.
    """

    contract_attrs = ("forward",)
    contract_outputs = ("deformation", "occlusion_map")

    def prepare_source(self, source: Tensor, kp_source: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """What depends on the source only (e.g. the downsampled source), or ``None`` (the default).

        When it returns a dict, :class:`~thkit.models.talking_head.TalkingHeadModel` computes it once per
        source in ``encode_source`` and passes it back as ``forward(..., source_cache=...)`` (it may have batch
        1 for a batch of driving keypoints); otherwise the estimator is called without ``source_cache``.
        """
        return None


class Warper(Part):
    """``forward(feature, deformation, occlusion=None) -> warped feature``; ``warp_image`` for images.

    ``align_corners`` is a setting, not a constant: FOMM's released weights were trained with torch 1.0
    semantics (``True``), TPSMM passes ``True``, official code run on today's torch uses ``False``.

    Optional: ``warp_at(feature, deformation, rows, cols)``, the warp (no occlusion) on some output rows and
    columns only; a part that reads few pixels of a warped feature uses it when the warper has it (an exact
    inference shortcut, ``warp_reads``), and warps the whole feature otherwise.
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
    """``forward(image, kp=None) -> {'feature_maps': list[Tensor], 'prediction_map': Tensor}`` per scale.

    ``uses_keypoints``: the discriminator is conditioned on the driving keypoints and is called as
    ``forward(image, kp=keypoints)``; otherwise (the default) as ``forward(image)``.  Call it through
    :func:`discriminate`.
    """

    contract_attrs = ("forward",)
    #: ``forward`` takes the (detached) driving keypoints as ``kp=``
    uses_keypoints: bool = False


class Codebook(Part):
    """A vector-quantised codebook: ``forward(z, codes=None) -> {'quantized', 'indices', 'loss', ...}``."""

    contract_attrs = ("forward", "num_codes", "dim")
    contract_outputs = ("quantized", "indices")


class CodeAllocation:
    """Which code indices each scale may use: ``indices(scale, num_scales, num_codes) -> LongTensor``.

    Optional hook :meth:`codes`: the same selection in the form the codebook takes most cheaply.
    """

    contract_attrs = ("indices",)
    contract_outputs: tuple[str, ...] = ()

    def codes(self, scale: int, num_scales: int, num_codes: int) -> Any:
        """The codes of ``scale`` as a codebook's ``codes=`` argument (default: :meth:`indices`; contiguous
        allocations return a ``slice``, which a codebook can use as a view)."""
        return self.indices(scale, num_scales, num_codes)


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
    warped by the flow at image size), and ``driving`` when it is known (training).  After a compensator ran,
    ``compensation`` is its output dict (e.g. refined occlusion maps a decoder blends with) and, when that output
    has ``deformed`` (the source warped by a refined flow), ``deformed`` is replaced by it.
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


# ---------------------------------------------------------------------------------------------------------
# optional hooks: one call each, with the base class's default for a plugin part that lacks the hook
# ---------------------------------------------------------------------------------------------------------
def _declared(part: Any) -> Any:
    """The module that declares a part's hooks: ``part`` itself or, inside a data-parallel wrapper, the
    wrapped module (the wrapper is still what gets called)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while isinstance(part, (DataParallel, DistributedDataParallel)):
        part = part.module
    return part


def _hook(part: Any, base: type, name: str) -> Any:
    """``part.name`` when the part has it, else ``base``'s default (a method is bound to ``part``)."""
    part = _declared(part)
    if hasattr(part, name):
        return getattr(part, name)
    default = inspect.getattr_static(base, name)
    return default.__get__(part, type(part)) if inspect.isfunction(default) else default


def prepare_source(motion: Any, source: Tensor, kp_source: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """``motion.prepare_source(source, kp_source)`` (:meth:`MotionEstimator.prepare_source`; default ``None``)."""
    return _hook(motion, MotionEstimator, "prepare_source")(source, kp_source)


def warps_features(compensator: Any) -> bool:
    """Whether ``compensator`` warps the raw features itself (:attr:`Compensator.warps_features`; default
    ``False``; ``None``, no compensator, does not)."""
    return compensator is not None and bool(_hook(compensator, Compensator, "warps_features"))


def allocation_codes(allocation: Any, scale: int, num_scales: int, num_codes: int) -> Any:
    """The codes ``allocation`` gives ``scale`` (:meth:`CodeAllocation.codes`; default its ``indices``)."""
    return _hook(allocation, CodeAllocation, "codes")(scale, num_scales, num_codes)


def uses_keypoints(discriminator: Any) -> bool:
    """Whether ``discriminator`` takes the driving keypoints (:attr:`Discriminator.uses_keypoints`)."""
    return bool(_hook(discriminator, Discriminator, "uses_keypoints"))


def discriminate(discriminator: Any, image: Tensor, kp: Mapping[str, Tensor] | None = None) -> Any:
    """Run a discriminator on ``image``: ``discriminator(image, kp=kp)`` when it :func:`uses_keypoints`, else
    ``discriminator(image)``.  Raises :class:`InterfaceError` when it needs keypoints and ``kp`` is ``None``."""
    if not uses_keypoints(discriminator):
        return discriminator(image)
    if kp is None:
        name = type(_declared(discriminator)).__name__
        raise InterfaceError(f"{name} is conditioned on keypoints (uses_keypoints=True) but was given kp=None")
    return discriminator(image, kp=kp)


def loss_inputs(part: Any) -> dict[str, Any]:
    """The extra loss-namespace entries ``part`` offers (:meth:`Part.loss_inputs`; default none; ``None``,
    an absent part, offers none)."""
    if part is None:
        return {}
    got = _hook(part, Part, "loss_inputs")()
    if not isinstance(got, Mapping):
        raise InterfaceError(f"{type(_declared(part)).__name__}.loss_inputs() must return a dict, got "
                             f"{type(got).__name__}")
    return dict(got)

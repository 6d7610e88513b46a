"""Official FOMM checkpoints (``{generator, kp_detector, discriminator, optimizer_*, epoch}``) to thkit.

The mapping is an explicit table of module rules (official module path -> thkit module path, and the
tensors that module type owns).  It is total in both directions:

* an official key that no rule matches, or a tensor name a module of that type does not own, is an error
  naming the key;
* a module that misses one of its tensors, a required module that is absent, an indexed family
  (``down_blocks.0..n``) with a gap, and encoder/decoder families of different lengths are errors naming
  what is missing.

Targets (the :class:`~thkit.models.talking_head.TalkingHeadModel` of ``recipes/fomm/*``):

=====================================================  =====================================================
official                                                thkit
=====================================================  =====================================================
``kp_detector.{down,predictor.*,kp,jacobian}``          ``model.keypoint_detector.{same}``
``generator.dense_motion_network.*``                    ``model.motion.*`` (hourglass, mask, occlusion, down)
``generator.first``, ``generator.down_blocks.i``        ``model.encoder.first``, ``model.encoder.down_blocks.i``
``generator.bottleneck.r{i}``                           ``model.decoder.bottleneck.{i}``
``generator.up_blocks.i``, ``generator.final``          ``model.decoder.up_blocks.i``, ``model.decoder.final``
``discriminator.discs.{s}.*``                           ``discriminator.discs.{s}.*`` (same layout)
=====================================================  =====================================================

``optimizer_*`` and ``epoch`` entries are training state and are ignored; ``discriminator`` is optional
(the official ``load_cpk`` tolerates its absence).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from thkit.convert._rules import AFFINE, BN, CONV, KERNEL, SN_CONV, Found, NetRules, Rule, convert_networks, match_score
from thkit.convert.base import Converter
from thkit.errors import CheckpointError
from thkit.registry import CONVERTERS

Tensor = torch.Tensor

_BLOCK = {"conv": CONV, "norm": BN}

#: per official network: rules (official module regex, thkit module template, tensors, required, family)
RULES: dict[str, list[Rule]] = {
    "kp_detector": [
        Rule(r"predictor\.encoder\.down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
             "keypoint_detector.predictor.encoder.down_blocks.{i}.{sub}", _BLOCK, True,
             "predictor.encoder.down_blocks"),
        Rule(r"predictor\.decoder\.up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
             "keypoint_detector.predictor.decoder.up_blocks.{i}.{sub}", _BLOCK, True, "predictor.decoder.up_blocks"),
        Rule(r"kp", "keypoint_detector.kp", CONV, True),
        Rule(r"jacobian", "keypoint_detector.jacobian", CONV),
        Rule(r"down", "keypoint_detector.down", KERNEL),
    ],
    "generator": [
        Rule(r"dense_motion_network\.hourglass\.encoder\.down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
             "motion.hourglass.encoder.down_blocks.{i}.{sub}", _BLOCK, True,
             "dense_motion_network.hourglass.encoder.down_blocks"),
        Rule(r"dense_motion_network\.hourglass\.decoder\.up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
             "motion.hourglass.decoder.up_blocks.{i}.{sub}", _BLOCK, True,
             "dense_motion_network.hourglass.decoder.up_blocks"),
        Rule(r"dense_motion_network\.mask", "motion.mask", CONV, True),
        Rule(r"dense_motion_network\.occlusion", "motion.occlusion", CONV),
        Rule(r"dense_motion_network\.down", "motion.down", KERNEL),
        Rule(r"first\.(?P<sub>conv|norm)", "encoder.first.{sub}", _BLOCK, True),
        Rule(r"down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "encoder.down_blocks.{i}.{sub}", _BLOCK, False,
             "down_blocks"),
        Rule(r"bottleneck\.r(?P<i>\d+)\.(?P<sub>conv1|conv2|norm1|norm2)", "decoder.bottleneck.{i}.{sub}",
             {"conv1": CONV, "conv2": CONV, "norm1": BN, "norm2": BN}, False, "bottleneck"),
        Rule(r"up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "decoder.up_blocks.{i}.{sub}", _BLOCK, False,
             "up_blocks"),
        Rule(r"final", "decoder.final", CONV, True),
    ],
    "discriminator": [
        Rule(r"discs\.(?P<s>[0-9-]+)\.down_blocks\.(?P<i>\d+)\.conv", "discs.{s}.down_blocks.{i}.conv",
             [CONV, SN_CONV], True, "discs.{s}.down_blocks"),
        Rule(r"discs\.(?P<s>[0-9-]+)\.down_blocks\.(?P<i>\d+)\.norm", "discs.{s}.down_blocks.{i}.norm", AFFINE),
        Rule(r"discs\.(?P<s>[0-9-]+)\.conv", "discs.{s}.conv", [CONV, SN_CONV], True),
    ],
}

#: families whose lengths must agree (encoder/decoder pairs)
_SAME_LENGTH = {
    "kp_detector": [("predictor.encoder.down_blocks", "predictor.decoder.up_blocks", 1)],
    "generator": [("dense_motion_network.hourglass.encoder.down_blocks",
                   "dense_motion_network.hourglass.decoder.up_blocks", 1), ("down_blocks", "up_blocks", 1)],
}


def _discriminator_norms(net: str, found: Found) -> list[str]:
    """Every pix2pix block but the first has an InstanceNorm."""
    return [f"{net}.{fam}.{i}.norm.*" for fam, idx in found.families.items() for i in sorted(idx)
            if i > 0 and f"{fam}.{i}.norm" not in found.modules]


#: where each official network lands in the thkit checkpoint, and its rules
_NETS = {
    "kp_detector": ("model", NetRules(RULES["kp_detector"], same_length=_SAME_LENGTH["kp_detector"])),
    "generator": ("model", NetRules(RULES["generator"], same_length=_SAME_LENGTH["generator"])),
    "discriminator": ("discriminator", NetRules(RULES["discriminator"], checks=(_discriminator_norms,))),
}
_IGNORED_TOP = ("optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector", "epoch")
_REQUIRED_TOP = ("generator", "kp_detector")


# ---------------------------------------------------------------------------------------------------------
# official configuration -> thkit recipe (the helpers are shared with the TPSMM and SMAC converters)
# ---------------------------------------------------------------------------------------------------------
_REQUIRED = object()
_KINDS = {int: "an integer", float: "a number", bool: "true or false", list: "a list", str: "a string"}
_IS_KIND = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
    list: lambda v: isinstance(v, (list, tuple)),
    str: lambda v: isinstance(v, str),
}


class _Section:
    """One mapping of an official configuration, read key by key.

    Every key must have been read (:meth:`get`, :meth:`section`) or named as ignored (:meth:`ignore`) when
    :meth:`done` is called; any other key is a :class:`~thkit.errors.CheckpointError` naming it (with its dotted
    path), because thkit cannot tell whether it would change the network.
    """

    def __init__(self, method: str, data: Any, where: str = ""):
        if hasattr(data, "to_dict"):
            data = data.to_dict()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{method} configuration: {where or 'the configuration'} must be a mapping, "
                                  f"got {type(data).__name__}")
        self.method, self.where, self.data = method, where, dict(data)
        self.read: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else str(key)

    def error(self, key: str, message: str) -> CheckpointError:
        return CheckpointError(f"{self.method} configuration: {self.path(key)}: {message}")

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = _REQUIRED, kind: type | None = None) -> Any:
        """The value of ``key`` (``default`` when absent: the official constructor's default), checked to be of
        ``kind`` (int, float, bool, list or str; a list comes back as a list)."""
        self.read.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "missing (the official code requires it)")
            return copy.deepcopy(default)
        value = self.data[key]
        if kind is not None:
            if not _IS_KIND[kind](value):
                raise self.error(key, f"expected {_KINDS[kind]}, got {value!r}")
            if kind is list:
                value = list(value)
        return value

    def section(self, key: str, required: bool = True) -> _Section | None:
        """The nested mapping ``key`` (``None`` when it is absent or null and not ``required``)."""
        self.read.add(key)
        if self.data.get(key) is None:
            if required:
                raise self.error(key, "missing (the official code requires it)")
            return None
        return _Section(self.method, self.data[key], self.path(key))

    def ignore(self, *keys: str) -> None:
        """Keys that do not change the network (training, data, logging, initial weights): accepted, not mapped."""
        self.read.update(keys)

    def done(self) -> None:
        """Raise for every key nobody read."""
        unknown = sorted((k for k in self.data if k not in self.read), key=str)
        if unknown:
            many = len(unknown) > 1
            raise CheckpointError(
                f"{self.method} configuration: unknown key{'s' if many else ''} "
                f"{', '.join(self.path(k) for k in unknown)}: thkit cannot tell how "
                f"{'they change' if many else 'it changes'} the network, so it does not guess "
                f"(remove {'them' if many else 'it'}, or write the recipe by hand)")


def _official_sections(method: str, config: Any, top_keys: Sequence[str], top_ignored: Sequence[str],
                       model_key: str = "model_params") -> tuple[_Section, _Section | None]:
    """``(model section, whole-file section or None)``: ``config`` is the whole official yaml (it has a
    ``model_key`` entry; its sections other than ``top_keys`` and ``top_ignored`` are errors) or just that entry."""
    whole = _Section(method, config)
    if model_key not in whole:
        return _Section(method, config, model_key), None
    whole.ignore(*top_ignored)
    whole.read.update(top_keys)
    model = whole.section(model_key)
    whole.done()
    return model, whole


def _base_recipe(name: str) -> dict[str, Any]:
    """A thkit recipe, resolved (bases merged), as a dict: what a mapped recipe starts from."""
    from thkit.recipe import load_recipe

    return copy.deepcopy(load_recipe(name).to_dict())


def _set_present(recipe: dict[str, Any], **values: Any) -> None:
    """Set those top-level variables of the recipe (``num_kp``, ``nf``, ...) that it has, so none is stale."""
    for key, value in values.items():
        if key in recipe:
            recipe[key] = value


def _image_size(method: str, image_size: int | None, dataset: _Section | None, base: int) -> int:
    """``image_size`` if given, else the official ``dataset_params.frame_shape`` (square) if stated, else ``base``
    (the thkit recipe's)."""
    if dataset is not None:
        shape = dataset.get("frame_shape", None)
        if image_size is None and shape is not None:
            if not isinstance(shape, (list, tuple)) or len(shape) < 2 or shape[0] != shape[1]:
                raise dataset.error("frame_shape", f"expected a square [H, W, C] frame, got {shape!r}")
            image_size = shape[0]
    if image_size is None:
        return int(base)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise CheckpointError(f"{method} configuration: image_size must be a positive number of pixels, "
                              f"got {image_size!r}")
    return image_size


def _plain(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe as JSON data (tuples become lists)."""
    from thkit.model_folder import plain

    return plain(recipe)


def _fomm_keypoint_detector(kp: _Section, num_kp: int, num_channels: int, estimate_jacobian: bool) -> dict:
    """thkit ``FOMMKeypointDetector`` arguments from the parameters of an official ``KPDetector`` (FOMM, SMAC)."""
    args = dict(num_kp=num_kp, in_channels=num_channels, block_expansion=kp.get("block_expansion", kind=int),
                max_features=kp.get("max_features", kind=int), num_blocks=kp.get("num_blocks", kind=int),
                temperature=kp.get("temperature", kind=float), estimate_jacobian=estimate_jacobian,
                scale_factor=kp.get("scale_factor", 1, float))
    for key, kind in (("single_jacobian_map", bool), ("pad", int)):  # same defaults: written when stated
        if key in kp:
            args[key] = kp.get(key, kind=kind)
    return args


def _fomm_dense_motion(dm: _Section, num_kp: int, num_channels: int, estimate_occlusion_map: bool) -> dict:
    """thkit ``FirstOrderMotion`` arguments from the parameters of an official ``DenseMotionNetwork`` (FOMM, SMAC)."""
    return dict(num_kp=num_kp, in_channels=num_channels, block_expansion=dm.get("block_expansion", kind=int),
                max_features=dm.get("max_features", kind=int), num_blocks=dm.get("num_blocks", kind=int),
                scale_factor=dm.get("scale_factor", 1, float), kp_variance=dm.get("kp_variance", 0.01, float),
                estimate_occlusion_map=estimate_occlusion_map)


#: sections of the whole official yaml: mapped besides ``model_params``, and ignored (no effect on the networks)
_FOMM_TOP = ("dataset_params", "animate_params")
_FOMM_TOP_IGNORED = ("train_params", "reconstruction_params", "visualizer_params")


def _fomm_recipe(config: Any, patches: Mapping[str, Any] | None, image_size: int | None,
                 align_corners: bool | None) -> dict[str, Any]:
    """:meth:`FOMMConverter.recipe_from_official`."""
    model_params, whole = _official_sections("FOMM", config, _FOMM_TOP, _FOMM_TOP_IGNORED)
    _Section("FOMM", patches, "patches").done()  # the official code hard-codes no width: FOMM has no patch
    recipe = _base_recipe("fomm/vox256")
    m = recipe["model"]

    common = model_params.section("common_params")
    num_kp, channels = common.get("num_kp", kind=int), common.get("num_channels", kind=int)
    jacobian = common.get("estimate_jacobian", False, bool)
    common.done()

    kp = model_params.section("kp_detector_params")
    m["keypoint_detector"].update(_fomm_keypoint_detector(kp, num_kp, channels, jacobian))
    kp.done()

    gen = model_params.section("generator_params")
    occlusion = gen.get("estimate_occlusion_map", False, bool)
    dm = gen.section("dense_motion_params", required=False)
    if dm is None:
        raise gen.error("dense_motion_params", "missing: a generator without a dense motion network (it warps "
                                               "nothing) has no thkit counterpart")
    m["motion"].update(_fomm_dense_motion(dm, num_kp, channels, occlusion))
    dm.done()
    widths = dict(block_expansion=gen.get("block_expansion", kind=int),
                  max_features=gen.get("max_features", kind=int), num_down_blocks=gen.get("num_down_blocks", kind=int))
    m["encoder"].update(in_channels=channels, **widths)
    m["decoder"].update(out_channels=channels, num_bottleneck_blocks=gen.get("num_bottleneck_blocks", kind=int),
                        **widths)
    gen.done()

    disc = model_params.section("discriminator_params", required=False)
    if disc is None:
        recipe.pop("discriminator", None)
    else:  # official Discriminator defaults
        recipe["discriminator"].update(
            scales=disc.get("scales", [], list), in_channels=channels,
            block_expansion=disc.get("block_expansion", 64, int),
            num_blocks=disc.get("num_blocks", 4, int), max_features=disc.get("max_features", 512, int),
            sn=disc.get("sn", False, bool), use_kp=disc.get("use_kp", False, bool), num_kp=num_kp,
            kp_variance=disc.get("kp_variance", 0.01, float))
        disc.done()
    model_params.done()

    # grid_sample / interpolate calls the official code makes with torch's default align_corners
    ac = bool(m["warper"]["align_corners"] if align_corners is None else align_corners)
    m["motion"]["align_corners"] = m["warper"]["align_corners"] = ac
    if isinstance((recipe.get("losses") or {}).get("equivariance"), dict):
        recipe["losses"]["equivariance"]["align_corners"] = ac
    dataset = animate = None
    if whole is not None:
        dataset, animate = whole.section("dataset_params", False), whole.section("animate_params", False)
    recipe["image_size"] = _image_size("FOMM", image_size, dataset, recipe["image_size"])
    if animate is not None:
        norm = animate.section("normalization_params", False)
        if norm is not None:  # animate.normalize_kp's defaults
            recipe["motion_transfer"] = dict(relative=norm.get("use_relative_movement", False, bool),
                                             relative_jacobian=norm.get("use_relative_jacobian", False, bool),
                                             adapt_movement_scale=norm.get("adapt_movement_scale", False, bool))
            norm.done()
    _set_present(recipe, num_kp=num_kp, align_corners=ac)
    return _plain(recipe)


@CONVERTERS.register_module(name="fomm")
class FOMMConverter(Converter):
    """FOMM (Siarohin et al., NeurIPS 2019): ``vox-cpk.pth.tar`` = ``{generator, kp_detector[, discriminator],
    optimizer_*, epoch}``."""

    method = "fomm"
    paper = "First Order Motion Model for Image Animation (NeurIPS 2019)"
    files = "one official checkpoint file (vox-cpk.pth.tar)"

    def detect(self, checkpoint: Any) -> tuple[float, str]:
        return match_score(checkpoint, _NETS, required=_REQUIRED_TOP, ignored=_IGNORED_TOP)

    def convert(self, checkpoint: Any) -> dict[str, dict[str, Tensor]]:
        """Map an official FOMM checkpoint dict to ``{'model': sd, 'discriminator': sd}`` (the latter if present)."""
        return convert_networks("FOMM", checkpoint, _NETS, required=_REQUIRED_TOP, ignored=_IGNORED_TOP)

    def recipe_from_official(self, official_config: Mapping[str, Any], patches: Mapping[str, Any] | None = None,
                             *, image_size: int | None = None, align_corners: bool | None = None) -> dict[str, Any]:
        """The official FOMM configuration as a thkit recipe (plain JSON data).

        ``official_config``: the official yaml's dict (``config/vox-256.yaml``), whole or just its
        ``model_params``.  The recipe is ``recipes/fomm/vox256.py`` (so its training settings are inherited) with
        every value the configuration states, or the official constructor's default where it states none:

        * ``common_params`` (num_kp, num_channels, estimate_jacobian), ``kp_detector_params`` (block_expansion,
          max_features, num_blocks, temperature, scale_factor, single_jacobian_map, pad) ->
          ``model.keypoint_detector``;
        * ``generator_params.dense_motion_params`` (block_expansion, max_features, num_blocks, scale_factor,
          kp_variance) and ``estimate_occlusion_map`` -> ``model.motion``;
        * ``generator_params`` (block_expansion, max_features, num_down_blocks, num_bottleneck_blocks) ->
          ``model.encoder`` / ``model.decoder``;
        * ``discriminator_params`` (scales, block_expansion, num_blocks, max_features, sn, use_kp, kp_variance)
          -> ``discriminator`` (left out when the configuration has none);
        * of the whole yaml: ``dataset_params.frame_shape`` -> ``image_size``;
          ``animate_params.normalization_params`` -> ``motion_transfer``.

        Any other key of ``model_params`` (or top-level section of the whole yaml) is a
        :class:`~thkit.errors.CheckpointError` naming it.  Ignored, as they do not change the networks:
        ``train_params`` (its loss weights, schedule and ``scales`` stay the thkit recipe's),
        ``reconstruction_params``, ``visualizer_params``, the rest of ``dataset_params`` and ``animate_params``.

        ``patches``: FOMM's official code hard-codes no width, so the parity fixture has none (``{}``); any
        entry is an error.

        ``image_size``: the image side (px); default: ``frame_shape``, else 256.  (``model_params`` does not
        state it: the parity fixture's is its ``meta['image_size']``, 64.)

        ``align_corners``: the official code calls ``grid_sample`` / ``interpolate`` with torch's default, which
        the configuration cannot tell: ``None`` (default) keeps ``recipes/fomm/vox256.py``'s ``True``, what the
        released weights were trained with (torch 1.0); ``False`` is the official code run on today's torch
        (the parity fixture; ``recipes/fomm/tiny_fixture.py``).  Applied to the motion network, the warper and
        the equivariance loss.
        """
        return _fomm_recipe(official_config, patches, image_size, align_corners)

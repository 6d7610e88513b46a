"""Official TPSMM checkpoints to thkit (yoyo-nb/Thin-Plate-Spline-Motion-Model).

An official checkpoint holds ``{inpainting_network, dense_motion_network, kp_detector, [bg_predictor],
[avd_network], optimizer*, epoch}``.  The networks map onto the
:class:`~thkit.models.talking_head.TalkingHeadModel` of ``recipes/tpsmm/*`` and a separate AVD network:

=========================================================  ==================================================
official                                                    thkit
=========================================================  ==================================================
``kp_detector.fg_encoder.*`` (ResNet-18)                    ``model.keypoint_detector.backbone.*``
``dense_motion_network.{down,hourglass,maps,up,occlusion}`` ``model.motion.{same}``
``bg_predictor.bg_encoder.*`` (ResNet-18, 6-ch stem)        ``model.motion.bg_predictor.backbone.*``
``inpainting_network.{first,down_blocks}``                  ``model.encoder.{first,down_blocks}``
``inpainting_network.{resblock,up_blocks,final}``           ``model.decoder.{resblock,up_blocks,final}``
``avd_network.{id_encoder,pose_encoder,decoder}.*``         ``avd_network.{same}``
=========================================================  ==================================================

The mapping is a table of module rules and is total: an official key that no rule matches, a tensor a
module of that type does not own, a module missing one of its tensors, a missing ResNet/AVD module, a gap
in an indexed family, or inconsistent family lengths raise :class:`~thkit.errors.CheckpointError` naming
them.  ``optimizer*`` and ``epoch`` entries are training state and are ignored.  ``bg_predictor`` and
``avd_network`` are optional: without ``bg_predictor`` the model weights lack ``motion.bg_predictor.*``,
so load them into a recipe with ``model.motion.background_predictor=None``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from thkit.convert._rules import (
    AFFINE,
    BN,
    CONV,
    CONV_NOBIAS,
    KERNEL,
    LINEAR,
    NetRules,
    Rule,
    convert_networks,
    match_score,
)
from thkit.convert.base import Converter
from thkit.convert.fomm import _base_recipe, _image_size, _official_sections, _plain, _Section, _set_present
from thkit.registry import CONVERTERS

Tensor = torch.Tensor


def _resnet18_modules() -> dict[str, tuple[str, ...]]:
    """Every module of a torchvision ResNet-18 that owns tensors, with the tensors it owns."""
    mods = {"conv1": CONV_NOBIAS, "bn1": BN, "fc": LINEAR}
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            mods.update({f"{p}.conv1": CONV_NOBIAS, f"{p}.bn1": BN, f"{p}.conv2": CONV_NOBIAS, f"{p}.bn2": BN})
    return mods


def _avd_modules() -> dict[str, tuple[str, ...]]:
    """Every module of the official AVDNetwork that owns tensors (Linear at 0/3/6/9, BatchNorm1d at 1/4/7)."""
    mods = {}
    for part in ("id_encoder", "pose_encoder", "decoder"):
        mods.update({f"{part}.{i}": LINEAR for i in (0, 3, 6, 9)})
        mods.update({f"{part}.{i}": BN for i in (1, 4, 7)})
    return mods


def _fixed(modules: dict[str, tuple[str, ...]], strip: str, prefix: str) -> NetRules:
    """A net of fixed structure (AVD MLPs): every listed module present, nothing else.

    ``strip`` is the official prefix of the net's modules (``fg_encoder.``), ``prefix`` the thkit one.
    """
    return NetRules([Rule(re.escape(strip + m), prefix + m, owned) for m, owned in modules.items()],
                    required_modules=[strip + m for m in modules])


def _resnet18(strip: str, prefix: str) -> NetRules:
    """A torchvision ResNet-18, with its projection shortcuts ``layerN.0.downsample.{0,1}`` (conv, BatchNorm).

    They come as a pair; stages 2-4 (stride 2) must have one, stage 1 has one only when its width differs
    from the stem's.
    """
    fixed = _fixed(_resnet18_modules(), strip, prefix)
    shortcut = Rule(re.escape(strip) + r"layer(?P<s>[1-4])\.0\.downsample\.(?P<sub>[01])",
                    prefix + "layer{s}.0.downsample.{sub}", {"0": CONV_NOBIAS, "1": BN})
    return NetRules([*fixed.rules, shortcut], required_modules=[
        *fixed.required_modules, *(f"{strip}layer{s}.0.downsample" for s in range(2, 5))])


_BLOCK = {"conv": CONV, "norm": AFFINE}

_DENSE_MOTION = NetRules(
    [
        Rule(r"down", "motion.down", KERNEL),
        Rule(r"hourglass\.encoder\.down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
             "motion.hourglass.encoder.down_blocks.{i}.{sub}", _BLOCK, family="hourglass.encoder.down_blocks"),
        Rule(r"hourglass\.decoder\.up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
             "motion.hourglass.decoder.up_blocks.{i}.{sub}", _BLOCK, family="hourglass.decoder.up_blocks"),
        Rule(r"maps", "motion.maps", CONV),
        Rule(r"up\.(?P<i>\d+)\.(?P<sub>conv|norm)", "motion.up.{i}.{sub}", _BLOCK, family="up"),
        Rule(r"occlusion\.(?P<i>\d+)", "motion.occlusion.{i}", CONV, family="occlusion"),
    ],
    # the official constructor always creates these
    required_modules=("maps", "occlusion.0", "hourglass.encoder.down_blocks.0.conv",
                      "hourglass.decoder.up_blocks.0.conv"),
    same_length=[("hourglass.encoder.down_blocks", "hourglass.decoder.up_blocks", 1)],
)

_INPAINTING = NetRules(
    [
        Rule(r"first\.(?P<sub>conv|norm)", "encoder.first.{sub}", _BLOCK),
        Rule(r"down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "encoder.down_blocks.{i}.{sub}", _BLOCK,
             family="down_blocks"),
        Rule(r"resblock\.(?P<i>\d+)\.(?P<sub>conv1|conv2|norm1|norm2)", "decoder.resblock.{i}.{sub}",
             {"conv1": CONV, "conv2": CONV, "norm1": AFFINE, "norm2": AFFINE}, family="resblock"),
        Rule(r"up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "decoder.up_blocks.{i}.{sub}", _BLOCK,
             family="up_blocks"),
        Rule(r"final", "decoder.final", CONV),
    ],
    required_modules=("first.conv", "first.norm", "final", "down_blocks.0.conv"),
    # len(b) must equal factor * len(a)
    same_length=[("down_blocks", "up_blocks", 1), ("down_blocks", "resblock", 2)],
)

#: official network -> (destination checkpoint entry, rules)
_NETS = {
    "kp_detector": ("model", _resnet18("fg_encoder.", "keypoint_detector.backbone.")),
    "bg_predictor": ("model", _resnet18("bg_encoder.", "motion.bg_predictor.backbone.")),
    "dense_motion_network": ("model", _DENSE_MOTION),
    "inpainting_network": ("model", _INPAINTING),
    "avd_network": ("avd_network", _fixed(_avd_modules(), "", "")),
}
_REQUIRED_NETS = ("kp_detector", "dense_motion_network", "inpainting_network")
_IGNORED_TOP = ("optimizer", "optimizer_bg_predictor", "optimizer_avd", "epoch")


#: sections of the whole official yaml: mapped besides ``model_params``, and ignored (no effect on the networks)
_TOP = ("dataset_params",)
_TOP_IGNORED = ("train_params", "train_avd_params", "visualizer_params", "reconstruction_params", "animate_params")
#: the widths the official code hard-codes (torchvision's ResNet-18, the background stem, the AVD MLP), which the
#: parity fixture patched (``meta['fixture_patches']``)
_PATCH_DEFAULTS = {"resnet18_stage_widths": [64, 128, 256, 512], "bg_predictor_conv1_out_channels": 64,
                   "avd_hidden_widths": [256, 512, 1024]}


def _widths(patches: _Section, key: str, n: int) -> list[int]:
    value = patches.get(key, _PATCH_DEFAULTS[key], list)
    if len(value) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise patches.error(key, f"expected {n} positive integers, got {value!r}")
    return value


def _tpsmm_recipe(config: Any, patches: Mapping[str, Any] | None, image_size: int | None) -> dict[str, Any]:
    """:meth:`TPSMMConverter.recipe_from_official`."""
    model_params, whole = _official_sections("TPSMM", config, _TOP, _TOP_IGNORED)
    p = _Section("TPSMM", patches, "patches")
    resnet = _widths(p, "resnet18_stage_widths", 4)
    bg_stem = p.get("bg_predictor_conv1_out_channels", _PATCH_DEFAULTS["bg_predictor_conv1_out_channels"], int)
    if bg_stem != resnet[0]:
        raise p.error("bg_predictor_conv1_out_channels", f"{bg_stem}: thkit's ResNet-18 stem has the first stage "
                                                         f"width ({resnet[0]}), as the official one has (64 = 64)")
    avd_hidden = _widths(p, "avd_hidden_widths", 3)
    p.done()
    recipe = _base_recipe("tpsmm/vox256")
    m = recipe["model"]

    common = model_params.section("common_params")
    num_tps, channels = common.get("num_tps", kind=int), common.get("num_channels", kind=int)
    bg, multi_mask = common.get("bg", kind=bool), common.get("multi_mask", True, bool)
    common.done()
    if channels != 3:
        raise common.error("num_channels", f"{channels}: the official keypoint detector and background predictor "
                                           f"are torchvision ResNet-18s on 3-channel images (6 for the pair)")

    m["keypoint_detector"].update(num_tps=num_tps, num_channels=channels, stage_widths=resnet)
    dm = model_params.section("dense_motion_params")
    m["motion"].update(
        num_tps=num_tps, num_channels=channels, block_expansion=dm.get("block_expansion", kind=int),
        max_features=dm.get("max_features", kind=int), num_blocks=dm.get("num_blocks", kind=int),
        scale_factor=dm.get("scale_factor", 0.25, float), kp_variance=dm.get("kp_variance", 0.01, float),
        multi_mask=multi_mask, background_predictor=dict(stage_widths=resnet) if bg else None, use_background=bg)
    dm.done()

    gen = model_params.section("generator_params")
    widths = dict(block_expansion=gen.get("block_expansion", kind=int),
                  max_features=gen.get("max_features", kind=int), num_down_blocks=gen.get("num_down_blocks", kind=int))
    gen.done()
    m["encoder"].update(in_channels=channels, **widths)
    m["decoder"].update(out_channels=channels, **widths)

    avd = model_params.section("avd_network_params", required=False)
    if avd is None:
        recipe.pop("avd_network", None)
    else:  # official AVDNetwork defaults
        recipe["avd_network"].update(num_tps=num_tps, id_bottle_size=avd.get("id_bottle_size", 64, int),
                                     pose_bottle_size=avd.get("pose_bottle_size", 64, int), hidden_widths=avd_hidden)
        avd.done()
    model_params.done()

    dataset = whole.section("dataset_params", False) if whole is not None else None
    recipe["image_size"] = _image_size("TPSMM", image_size, dataset, recipe["image_size"])
    _set_present(recipe, num_tps=num_tps, resnet_widths=resnet)
    return _plain(recipe)


@CONVERTERS.register_module(name="tpsmm")
class TPSMMConverter(Converter):
    """TPSMM (Zhao & Zhang, CVPR 2022): ``vox.pth.tar`` = ``{kp_detector, dense_motion_network,
    inpainting_network[, bg_predictor][, avd_network], optimizer*, epoch}``."""

    method = "tpsmm"
    paper = "Thin-Plate Spline Motion Model for Image Animation (CVPR 2022)"
    files = "one official checkpoint file (vox.pth.tar)"

    def detect(self, checkpoint: Any) -> tuple[float, str]:
        return match_score(checkpoint, _NETS, required=_REQUIRED_NETS, ignored=_IGNORED_TOP)

    def convert(self, checkpoint: Any) -> dict[str, dict[str, Tensor]]:
        """Map an official TPSMM checkpoint dict to ``{'model': sd, 'avd_network': sd}`` (the latter if present)."""
        return convert_networks("TPSMM", checkpoint, _NETS, required=_REQUIRED_NETS, ignored=_IGNORED_TOP)

    def recipe_from_official(self, official_config: Mapping[str, Any], patches: Mapping[str, Any] | None = None,
                             *, image_size: int | None = None) -> dict[str, Any]:
        """The official TPSMM configuration as a thkit recipe (plain JSON data).

        ``official_config``: the official yaml's dict (``config/vox-256.yaml``), whole or just its
        ``model_params``.  The recipe is ``recipes/tpsmm/vox256.py`` with every value the configuration states, or
        the official constructor's default where it states none:

        * ``common_params``: num_tps -> keypoint detector, motion, AVD network; num_channels (must be 3: the
          official ResNet-18s take 3-channel images); bg -> ``model.motion.background_predictor`` (``None``
          without) and ``use_background``; multi_mask -> ``model.motion.multi_mask``;
        * ``dense_motion_params`` (block_expansion, max_features, num_blocks, scale_factor, kp_variance) ->
          ``model.motion``;
        * ``generator_params`` (block_expansion, max_features, num_down_blocks) -> ``model.encoder`` /
          ``model.decoder``;
        * ``avd_network_params`` (id_bottle_size, pose_bottle_size) -> ``avd_network`` (left out when the
          configuration has none);
        * of the whole yaml: ``dataset_params.frame_shape`` -> ``image_size``.

        There is no discriminator (TPSMM trains none).  Any other key of ``model_params`` (or top-level section
        of the whole yaml) is a :class:`~thkit.errors.CheckpointError` naming it.  Ignored, as they do not change
        the networks: ``train_params``, ``train_avd_params``, ``visualizer_params``, the rest of
        ``dataset_params`` (and ``reconstruction_params`` / ``animate_params`` if present).

        ``patches`` (the parity fixture's ``meta['fixture_patches']``; the official code hard-codes these widths,
        and each default is the official value): ``resnet18_stage_widths`` (64, 128, 256, 512) -> both
        ResNet-18s' ``stage_widths``; ``bg_predictor_conv1_out_channels`` (64) must equal the first stage width,
        as thkit's background stem has it; ``avd_hidden_widths`` (256, 512, 1024) -> ``avd_network.hidden_widths``.
        Any other entry is an error.

        ``image_size``: the image side (px); default: ``frame_shape``, else 256 (the parity fixture's is its
        ``meta['image_size']``, 64).  ``align_corners`` needs no option: the official code passes ``True`` to every
        call, as the recipe does.
        """
        return _tpsmm_recipe(official_config, patches, image_size)

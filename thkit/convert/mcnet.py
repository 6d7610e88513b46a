"""Official MCNet checkpoints (``{generator, kp_detector, discriminator, optimizer_*, epoch}``) to thkit.

MCNet (Hong & Xu, ICCV 2023; harlanhong/ICCV2023-MCNET) saves FOMM's checkpoint layout; DDP-trained files carry a
``module.`` prefix on every key (demo.py strips it, and so does this converter).  Targets (the
:class:`~thkit.models.talking_head.TalkingHeadModel` of ``recipes/mcnet/*``):

=====================================================  =====================================================
official                                                thkit
=====================================================  =====================================================
``kp_detector.*``, ``generator.dense_motion_network.*`` as FOMM's (:mod:`thkit.convert.fomm`)
``generator.first``, ``generator.down_blocks.i``        ``model.encoder.first``, ``model.encoder.down_blocks.i``
``generator.resblock.j``, ``up_blocks.i``, ``final``     ``model.decoder.resblock.j``, ``up_blocks.i``, ``final``
``generator.mbUnit.mb``                                 ``model.compensator.memory``
``mbUnit.feat_forward_proj_{32,64,128}``                ``model.compensator.proj.{0,1,2}`` (coarse to fine)
``mbUnit.style_route.{0,2}``                            ``model.compensator.style_mlp.{0,2}``
``mbUnit.styleconv.{modulated_conv,activate}.*``        ``model.compensator.memory_conv.{same}``
``mbUnit.styleconv.weight`` (noise strength)            ``model.compensator.memory_conv.noise_weight``
``mbUnit.conv_kv.*``                                    ``model.compensator.key_value.*``
``mbUnit.query_conv``, ``mbUnit.diff_conv``             ``model.compensator.query``, ``model.compensator.diff``
``mbUnit.conv_{32,64,128}``, ``mbUnit.norm_{...}``      ``model.compensator.out_conv.{j}``, ``out_norm.{j}``
``discriminator.discs.{s}.*``                           ``discriminator.discs.{s}.*`` (FOMM's layout)
=====================================================  =====================================================
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from thkit.convert._rules import AFFINE, BN, CONV, LINEAR, NetRules, Rule, convert_networks, match_score
from thkit.convert.base import Converter
from thkit.convert.fomm import (
    RULES as FOMM_RULES,
)
from thkit.convert.fomm import (
    _base_recipe,
    _fomm_dense_motion,
    _fomm_keypoint_detector,
    _image_size,
    _official_sections,
    _plain,
    _Section,
    _set_present,
)
from thkit.errors import CheckpointError
from thkit.registry import CONVERTERS

Tensor = torch.Tensor

_BLOCK = {"conv": CONV, "norm": BN}
_SIZES = "mbUnit.sizes"
_MB = r"mbUnit\."


def _bare(pattern: str) -> str:
    """A rule pattern for a bare parameter (no module of its own): the key itself, empty leaf."""
    return rf"(?P<mod>{pattern})(?P<leaf>)"


#: the FOMM rules MCNet shares (keypoint detector; dense motion, encoder, up blocks, final of the generator)
_FOMM_GENERATOR = [r for r in FOMM_RULES["generator"] if not r.pattern.startswith("bottleneck")]

RULES: dict[str, list[Rule]] = {
    "kp_detector": list(FOMM_RULES["kp_detector"]),
    "generator": _FOMM_GENERATOR + [
        Rule(r"resblock\.(?P<i>\d+)\.(?P<sub>conv1|conv2|norm1|norm2)", "decoder.resblock.{i}.{sub}",
             {"conv1": CONV, "conv2": CONV, "norm1": BN, "norm2": BN}, True, "resblock"),
        Rule(_bare(r"mbUnit\.mb"), "compensator.memory", ("", ), True),
        Rule(r"mbUnit\.feat_forward_proj_(?P<s>\d+)", "compensator.proj.{j}", CONV, True, None, _SIZES),
        Rule(r"mbUnit\.conv_(?P<s>\d+)", "compensator.out_conv.{j}", CONV, True, None, _SIZES),
        Rule(r"mbUnit\.norm_(?P<s>\d+)", "compensator.out_norm.{j}", AFFINE, True, None, _SIZES),
        Rule(r"mbUnit\.query_conv", "compensator.query", CONV, True),
        Rule(r"mbUnit\.diff_conv", "compensator.diff", CONV, True),
        Rule(r"mbUnit\.style_route\.(?P<i>0|2)", "compensator.style_mlp.{i}", LINEAR, True),
        Rule(_bare(r"mbUnit\.styleconv\.weight"), "compensator.memory_conv.noise_weight", ("", ), True),
        Rule(r"mbUnit\.styleconv\.modulated_conv", "compensator.memory_conv.modulated_conv", ("weight", ), True),
        Rule(r"mbUnit\.styleconv\.modulated_conv\.modulation", "compensator.memory_conv.modulated_conv.modulation",
             LINEAR, True),
        Rule(r"mbUnit\.styleconv\.activate", "compensator.memory_conv.activate", ("bias", ), True),
        Rule(r"mbUnit\.conv_kv", "compensator.key_value", CONV, True),
        Rule(r"mbUnit\.conv_kv\.attention\.fc1", "compensator.key_value.attention.fc1", ("weight", ), True),
        Rule(r"mbUnit\.conv_kv\.attention\.fc2", "compensator.key_value.attention.fc2", CONV, True),
    ],
    "discriminator": list(FOMM_RULES["discriminator"]),
}


def _sizes_complete(net: str, found) -> list[str]:
    """Projection, output conv and norm exist for the same spatial sizes; the style MLP has both layers."""
    missing = []
    sizes = found.sizes.get(_SIZES, set())
    for s in sorted(sizes):
        for name in (f"mbUnit.feat_forward_proj_{s}", f"mbUnit.conv_{s}", f"mbUnit.norm_{s}"):
            if name not in found.modules:
                missing.append(f"{net}.{name}.*")
    for i in (0, 2):
        if f"mbUnit.style_route.{i}" not in found.modules:
            missing.append(f"{net}.mbUnit.style_route.{i}.*")
    return missing


def _discriminator_norms(net: str, found) -> list[str]:
    return [f"{net}.{fam}.{i}.norm.*" for fam, idx in found.families.items() for i in sorted(idx)
            if i > 0 and f"{fam}.{i}.norm" not in found.modules]


_NETS = {
    "kp_detector": ("model", NetRules(RULES["kp_detector"], same_length=[
        ("predictor.encoder.down_blocks", "predictor.decoder.up_blocks", 1)])),
    "generator": ("model", NetRules(RULES["generator"], checks=(_sizes_complete, ), same_length=[
        ("dense_motion_network.hourglass.encoder.down_blocks", "dense_motion_network.hourglass.decoder.up_blocks", 1),
        ("down_blocks", "up_blocks", 1), ("up_blocks", "resblock", 2)])),
    "discriminator": ("discriminator", NetRules(RULES["discriminator"], checks=(_discriminator_norms, ))),
}
_IGNORED_TOP = ("optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector", "epoch")
_REQUIRED_TOP = ("generator", "kp_detector")


def strip_module(checkpoint: Any) -> Any:
    """The checkpoint with a DDP ``module.`` prefix dropped from every key of its networks (as demo.py does)."""
    if not isinstance(checkpoint, Mapping):
        return checkpoint
    out = {}
    for name, sd in checkpoint.items():
        if name in _NETS and isinstance(sd, Mapping):
            sd = {(k[7:] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in sd.items()}
        out[name] = sd
    return out


def _describe(checkpoint: Mapping[str, Any]) -> dict[str, int]:
    """num_kp, mb_channel, mb_spatial of an official MCNet checkpoint (what recipes must match)."""
    gen, kp = checkpoint.get("generator") or {}, checkpoint.get("kp_detector") or {}
    info = {}
    if isinstance(kp.get("kp.weight"), Tensor):
        info["num_kp"] = int(kp["kp.weight"].shape[0])
    if isinstance(gen.get("mbUnit.mb"), Tensor):
        info["mb_channel"], info["mb_spatial"] = int(gen["mbUnit.mb"].shape[1]), int(gen["mbUnit.mb"].shape[-1])
    return info


# ---------------------------------------------------------------------------------------------------------
# official configuration (+ the command line it was run with) -> thkit recipe
# ---------------------------------------------------------------------------------------------------------
_TOP = ("dataset_params", "animate_params")
_TOP_IGNORED = ("train_params", "train_avd_params", "reconstruction_params", "visualizer_params")
#: run.py / demo.py defaults of the options that build the networks
CLI_DEFAULTS = {"generator": None, "kp_detector": "KPDetector", "mbunit": "", "mb_spatial": 32, "mb_channel": 512,
                "kp_num": -1}


def _mcnet_recipe(config: Any, patches: Mapping[str, Any] | None, cli_args: Mapping[str, Any] | None,
                  image_size: int | None) -> dict[str, Any]:
    """:meth:`MCNetConverter.recipe_from_official`."""
    data = dict(config.to_dict() if hasattr(config, "to_dict") else (config or {}))
    cli = dict(CLI_DEFAULTS)
    if "cli_args" in data:  # the parity fixture keeps its command line beside model_params
        cli.update(data.pop("cli_args") or {})
    elif "model_params" in data and isinstance(data["model_params"], Mapping) and "cli_args" in data["model_params"]:
        data["model_params"] = {k: v for k, v in data["model_params"].items() if k != "cli_args"}
        cli.update(config["model_params"]["cli_args"] or {})
    cli.update(cli_args or {})
    c = _Section("MCNet", cli, "cli_args")
    generator = c.get("generator", kind=None)
    if generator != "Unet_Generator_keypoint_aware":
        raise c.error("generator", f"thkit has MCNet's Unet_Generator_keypoint_aware (the README's --generator), "
                                   f"got {generator!r}")
    if c.get("kp_detector", kind=str) != "KPDetector":
        raise c.error("kp_detector", f"expected KPDetector, got {cli['kp_detector']!r}")
    if c.get("mbunit", kind=str) != "ExpendMemoryUnit":
        raise c.error("mbunit", f"thkit has the ExpendMemoryUnit memory (the README's --mbunit), got "
                                f"{cli['mbunit']!r}")
    mb_spatial, mb_channel = c.get("mb_spatial", kind=int), c.get("mb_channel", kind=int)
    kp_num = c.get("kp_num", kind=int)
    c.ignore(*(k for k in cli if k not in CLI_DEFAULTS))  # training switches (losses, batch size, ...)
    c.done()

    p = _Section("MCNet", patches, "patches")
    mb_widths = p.get("MB_FEATURE_CHANNELS", None)
    p.done()

    model_params, whole = _official_sections("MCNet", data, _TOP, _TOP_IGNORED)
    recipe = _base_recipe("mcnet/vox256")
    m = recipe["model"]
    common = model_params.section("common_params")
    num_kp, channels = common.get("num_kp", kind=int), common.get("num_channels", kind=int)
    jacobian = common.get("estimate_jacobian", False, bool)
    common.done()
    if kp_num != -1:  # run.py: --kp_num overrides common_params.num_kp
        num_kp = kp_num
    if num_kp != 15:
        raise CheckpointError(f"MCNet configuration: num_kp is {num_kp}, but the official ExpendMemoryUnit hard-codes "
                              f"2 * 15 keypoint inputs (run it with --kp_num 15, as the README does)")
    kp = model_params.section("kp_detector_params")
    m["keypoint_detector"].update(_fomm_keypoint_detector(kp, num_kp, channels, jacobian))
    kp.done()

    gen = model_params.section("generator_params")
    occlusion = gen.get("estimate_occlusion_map", False, bool)
    if not occlusion:
        raise gen.error("estimate_occlusion_map", "must be true (the official generator multiplies by the map)")
    dm = gen.section("dense_motion_params")
    m["motion"].update(_fomm_dense_motion(dm, num_kp, channels, occlusion), align_corners=False)
    dm.done()
    be, mf = gen.get("block_expansion", kind=int), gen.get("max_features", kind=int)
    nd = gen.get("num_down_blocks", kind=int)
    if nd != 3 or be * 8 != mf:
        raise gen.error("num_down_blocks", f"the official generator hard-codes 3 levels with widths max_features / "
                                           f"2**i (block_expansion * 8 == max_features); got num_down_blocks {nd}, "
                                           f"block_expansion {be}, max_features {mf}")
    gen.ignore("num_bottleneck_blocks", "memsize")  # accepted, unused by the official generator
    gen.done()
    m["encoder"].update(in_channels=channels, block_expansion=be, max_features=mf, num_down_blocks=nd)
    m["decoder"].update(out_channels=channels, block_expansion=be, max_features=mf, num_down_blocks=nd)
    if mb_widths is None:  # the official literals 512/256/128 at 32/64/128 px
        widths = (512, 256, 128)
    else:
        try:
            widths = tuple(int(mb_widths[str(s)] if str(s) in mb_widths else mb_widths[s]) for s in (32, 64, 128))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"MCNet configuration: patches.MB_FEATURE_CHANNELS must give the widths at 32, 64 "
                                  f"and 128 px, got {mb_widths!r}") from e
    if widths != (mf, mf // 2, mf // 4):
        raise CheckpointError(f"MCNet configuration: the memory unit expects widths {list(widths)} at 32/64/128 px but "
                              f"the decoder gives {[mf, mf // 2, mf // 4]} (max_features {mf})")
    m["compensator"].update(in_channels=list(widths), num_kp=num_kp, mb_channel=mb_channel, mb_spatial=mb_spatial)

    disc = model_params.section("discriminator_params", required=False)
    if disc is None:
        recipe.pop("discriminator", None)
    else:
        recipe["discriminator"].update(
            scales=disc.get("scales", [], list), in_channels=channels,
            block_expansion=disc.get("block_expansion", 64, int), num_blocks=disc.get("num_blocks", 4, int),
            max_features=disc.get("max_features", 512, int), sn=disc.get("sn", False, bool),
            use_kp=disc.get("use_kp", False, bool), num_kp=num_kp, kp_variance=disc.get("kp_variance", 0.01, float))
        disc.done()
    model_params.ignore("avd_network_params")  # in the yaml, unused by MCNet's generator
    model_params.done()

    dataset = whole.section("dataset_params", False) if whole is not None else None
    recipe["image_size"] = _image_size("MCNet", image_size, dataset, recipe["image_size"])
    if recipe["image_size"] != 256:
        raise CheckpointError(f"MCNet configuration: image_size {recipe['image_size']}: the official memory unit "
                              f"picks its layers by the 32/64/128 px feature sizes, so it runs at 256 px only")
    _set_present(recipe, num_kp=num_kp, block_expansion=be, max_features=mf, mb_channel=mb_channel,
                 mb_spatial=mb_spatial)
    return _plain(copy.deepcopy(recipe))


@CONVERTERS.register_module(name="mcnet")
class MCNetConverter(Converter):
    """MCNet (ICCV 2023): one checkpoint ``{generator, kp_detector[, discriminator], optimizer_*, epoch}``, keys
    possibly prefixed ``module.`` (DDP)."""

    method = "mcnet"
    paper = "Implicit Identity Representation Conditioned Memory Compensation Network (ICCV 2023)"
    files = "one official checkpoint file"

    def detect(self, checkpoint: Any) -> tuple[float, str]:
        return match_score(strip_module(checkpoint), _NETS, required=_REQUIRED_TOP, ignored=_IGNORED_TOP)

    def convert(self, checkpoint: Any) -> dict[str, dict[str, Tensor]]:
        """``{'model': sd[, 'discriminator': sd]}``; the generator's ``mbUnit`` becomes the compensator."""
        return convert_networks("MCNet", strip_module(checkpoint), _NETS, required=_REQUIRED_TOP,
                                ignored=_IGNORED_TOP)

    def describe(self, checkpoint: Any) -> dict[str, int]:
        """What an official checkpoint fixes: ``num_kp``, ``mb_channel``, ``mb_spatial``."""
        return _describe(strip_module(checkpoint))

    def checkpoint_settings(self, checkpoint: Any) -> dict[str, Any]:
        """The keypoint count and memory size of the file, at the recipe paths of ``recipes/mcnet/*``."""
        info = self.describe(checkpoint) if isinstance(checkpoint, Mapping) else {}
        out: dict[str, Any] = {}
        if "num_kp" in info:
            for path in ("model.keypoint_detector.num_kp", "model.motion.num_kp", "model.compensator.num_kp"):
                out[path] = info["num_kp"]
        for key in ("mb_channel", "mb_spatial"):
            if key in info:
                out[f"model.compensator.{key}"] = info[key]
        return out

    def recipe_from_official(self, official_config: Mapping[str, Any], patches: Mapping[str, Any] | None = None,
                             *, cli_args: Mapping[str, Any] | None = None,
                             image_size: int | None = None) -> dict[str, Any]:
        """The official MCNet configuration, with the command line it was run with, as a thkit recipe (JSON data).

        ``official_config``: ``config/vox-256.yaml``'s dict (whole, or its ``model_params``); a ``cli_args`` entry
        beside the sections (as in the parity fixture's ``config``) or the ``cli_args`` argument gives run.py's
        options (defaults: run.py's): ``generator`` must be ``Unet_Generator_keypoint_aware``, ``kp_detector``
        ``KPDetector``, ``mbunit`` ``ExpendMemoryUnit``; ``kp_num`` overrides ``common_params.num_kp`` and must
        make it 15 (the memory unit hard-codes 2 x 15 inputs); ``mb_spatial`` / ``mb_channel`` -> the
        compensator's memory.  Other options (loss weights, batch size) are training switches and are ignored.

        The recipe is ``recipes/mcnet/vox256.py`` with: ``kp_detector_params`` -> ``model.keypoint_detector``;
        ``generator_params`` (block_expansion, max_features, num_down_blocks = 3) -> encoder and decoder;
        ``dense_motion_params`` -> ``model.motion``; ``discriminator_params`` -> ``discriminator``.
        ``num_bottleneck_blocks``, ``memsize`` and ``avd_network_params`` are accepted and unused (as officially);
        ``train_params`` and the other non-model sections are ignored; any other key is an error naming it.

        ``patches``: the parity fixture's ``MB_FEATURE_CHANNELS`` ({32, 64, 128 px: width}; official 512/256/128),
        which must equal the decoder's widths.  ``image_size``: 256, the only size the official code runs at.
        """
        return _mcnet_recipe(official_config, patches, cli_args, image_size)

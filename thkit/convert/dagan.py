"""Official DaGAN files (Hong et al., CVPR 2022; harlanhong/CVPR2022-DaGAN) to thkit.

DaGAN's weights come in two kinds of files:

* the generator / keypoint checkpoint (``DaGAN_vox_adv_256.pth.tar``): ``{generator, kp_detector[, discriminator],
  optimizer_*, epoch}``, possibly with DDP ``module.`` prefixes (stripped);
* the depth network, two Monodepth2 files in one folder: ``encoder.pth`` (a torchvision ResNet under
  ``encoder.*``, plus the non-tensor entries ``height``, ``width``, ``use_stereo``, which are skipped) and
  ``depth.pth`` (``decoder.0..13``).  ``depth/models/weights_19`` is a ResNet-18 pair (what demo.py hard-codes),
  ``depth_face_model_Voxceleb2_10w`` a ResNet-50 pair (what training hard-codes); :func:`depth_variant` tells
  which a file is, and a recipe that asks for the other gets one line saying so (DaGAN users' most common error).

The generator comes in two variants: ``DepthAwareGenerator`` (FOMM's decoder; ``DaGAN_vox_adv_256.pth.tar``,
``recipes/dagan/vox256.py``) and ``SPADEDepthAwareGenerator`` (a SPADE decoder under ``generator.decoder.*``;
``SPADE_DaGAN_vox_adv_256.pth.tar``, ``recipes/dagan/vox256_spade.py``).  :func:`generator_variant` tells which a
checkpoint holds; a recipe with the other decoder gets one line naming the recipe to use
(:meth:`DaGANConverter.checkpoint_settings` / :meth:`~DaGANConverter.checkpoint_recipe` when a model is created with
a checkpoint, and ``combine(..., generator=...)``).

Targets (``recipes/dagan/*``):

=====================================================  =====================================================
official                                                thkit
=====================================================  =====================================================
``kp_detector.*``                                       ``model.keypoint_detector.*`` (FOMM layout, 4 channels)
``generator.dense_motion_network.*``                    ``model.motion.*``
``generator.first``, ``generator.down_blocks.i``        ``model.encoder.*``
``generator.src_first``, ``generator.src_down_blocks``  ``model.compensator.depth_encoder.{first,down_blocks}``
``generator.AttnModule.{query,key,value}_conv, gamma``  ``model.compensator.{query,key,value}_conv, gamma``
``generator.bottleneck.r{i}``, ``up_blocks``, ``final`` ``model.decoder.*`` (FOMMDecoder)
``generator.decoder.*`` (SPADE variant)                 ``model.decoder.*`` (SPADEDecoder; ``G_middle_{i}`` ->
                                                        ``middle.{i}``, ``up_{i}`` -> ``up_blocks.{i}``)
``discriminator.*``                                     ``discriminator.*``
``depth_encoder.encoder.*`` (encoder.pth)               ``model.keypoint_detector.depth.encoder.*``
``depth_decoder.decoder.*`` (depth.pth)                 ``model.keypoint_detector.depth.decoder.*``
=====================================================  =====================================================
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from thkit.convert import fomm as _fomm
from thkit.convert._rules import (
    BN,
    CONV,
    CONV_NOBIAS,
    LINEAR,
    SN_CONV,
    NetRules,
    Rule,
    convert_net,
    convert_networks,
    match_score,
)
from thkit.convert.base import Converter
from thkit.errors import CheckpointError
from thkit.registry import CONVERTERS

Tensor = torch.Tensor

_BLOCK = {"conv": CONV, "norm": BN}
_DEPTH_PREFIX = "keypoint_detector.depth."
#: the non-tensor entries Monodepth2 saves in encoder.pth
_DEPTH_META = ("height", "width", "use_stereo")
#: what each ResNet depth is, for messages
_VARIANT_FILES = {18: "DaGAN's depth/models/weights_19, used by demo.py",
                  50: "DaGAN's depth_face_model_Voxceleb2_10w, used by training"}


#: the official generator classes (run.py / demo.py ``--generator``) and the thkit recipe of each
PLAIN, SPADE = "DepthAwareGenerator", "SPADEDepthAwareGenerator"
GENERATOR_RECIPES = {PLAIN: "dagan/vox256", SPADE: "dagan/vox256_spade"}
#: the decoder part each generator variant has in thkit
_DECODERS = {PLAIN: "FOMMDecoder", SPADE: "SPADEDecoder"}
_GENERATOR_FILES = {PLAIN: "DaGAN_vox_adv_256.pth.tar", SPADE: "SPADE_DaGAN_vox_adv_256.pth.tar"}
#: FOMM's decoder modules, absent from the SPADE generator
_FOMM_DECODER = ("bottleneck\\.", "up_blocks\\.", "final")
#: a spectral-normalised conv without bias (the SPADE blocks' learned shortcut)
_SN_CONV_NOBIAS = ("weight_orig", "weight_u", "weight_v")
_SPADE = ("mlp_shared.0", "mlp_gamma", "mlp_beta")


def _spade_block_rule(official: str, target: str, shortcut: bool, required: bool) -> Rule:
    """The SPADE ResBlocks ``decoder.{official}_{i}``: convs 0/1 and their SPADE norms, or (``shortcut``) the learned
    shortcut conv_s + norm_s (only blocks whose widths change have it)."""
    subs = {"conv_s": _SN_CONV_NOBIAS} if shortcut else {"conv_0": SN_CONV, "conv_1": SN_CONV}
    for n in (("s",) if shortcut else ("0", "1")):
        subs.update({f"norm_{n}.{m}": CONV for m in _SPADE})
    alt = "|".join(re.escape(k) for k in subs)
    return Rule(rf"decoder\.{official}_(?P<i>\d+)\.(?P<sub>{alt})", f"decoder.{target}.{{i}}.{{sub}}", subs,
                required, f"decoder.{official}_" if not shortcut else None)


def _spade_decoder_rules() -> list[Rule]:
    """The official ``SPADEGenerator`` (``generator.decoder.*``) -> :class:`~thkit.decode.spade.SPADEDecoder`."""
    return [
        Rule(r"decoder\.(?P<m>compress|fc|conv_img)", "decoder.{m}", CONV, True),
        _spade_block_rule("G_middle", "middle", False, False),
        _spade_block_rule("G_middle", "middle", True, False),
        _spade_block_rule("up", "up_blocks", False, True),
        _spade_block_rule("up", "up_blocks", True, False),
    ]


def _generator_rules(variant: str = PLAIN) -> list[Rule]:
    extra = [
        Rule(r"src_first\.(?P<sub>conv|norm)", "compensator.depth_encoder.first.{sub}", _BLOCK, True),
        Rule(r"src_down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "compensator.depth_encoder.down_blocks.{i}.{sub}",
             _BLOCK, True, "src_down_blocks"),
        Rule(r"AttnModule\.(?P<c>query_conv|key_conv|value_conv)", "compensator.{c}", CONV, True),
        Rule(r"(?P<mod>AttnModule\.gamma)(?P<leaf>)", "compensator.gamma", ("",), True),
    ]
    if variant == SPADE:
        fomm = [r for r in _fomm.RULES["generator"] if not r.pattern.startswith(_FOMM_DECODER)]
        return [*fomm, *extra, *_spade_decoder_rules()]
    return [*_fomm.RULES["generator"], *extra]


def generator_variant(generator: Mapping[str, Any]) -> str:
    """Which official generator a ``generator`` state dict is: ``'SPADEDepthAwareGenerator'`` when it has the SPADE
    decoder's ``decoder.*`` keys, else ``'DepthAwareGenerator'``."""
    sd = _strip_module(generator)
    return SPADE if any(str(k).startswith("decoder.") for k in sd) else PLAIN


def _generator_mismatch(found: str, wanted: str) -> str:
    """One line: the checkpoint's generator variant is not the recipe's, and the recipe to use."""
    return (f"the checkpoint holds DaGAN's {found} ({_GENERATOR_FILES[found]}; "
            f"{'a SPADE decoder under generator.decoder.*' if found == SPADE else 'FOMM decoder keys'}) but the "
            f"recipe builds the {wanted} ({_DECODERS[wanted]}): use the recipe {GENERATOR_RECIPES[found]}")


def _depth_rules(prefix: str) -> tuple[NetRules, NetRules]:
    """Rules of the official depth encoder and decoder, into ``prefix`` + the part's ``encoder.*`` / ``decoder.*``."""
    enc = [
        Rule(r"encoder\.(?P<m>conv1|layer\d\.\d+\.conv\d|layer\d\.\d+\.downsample\.0)", prefix + "encoder.{m}",
             CONV_NOBIAS, True),
        Rule(r"encoder\.(?P<m>bn1|layer\d\.\d+\.bn\d|layer\d\.\d+\.downsample\.1)", prefix + "encoder.{m}", BN, True),
        Rule(r"encoder\.fc", prefix + "encoder.fc", LINEAR, True),
    ]
    dec = [
        Rule(r"decoder\.(?P<i>\d+)\.conv\.conv", prefix + "decoder.{i}.conv.conv", CONV, True),
        Rule(r"decoder\.(?P<i>\d+)\.conv", prefix + "decoder.{i}.conv", CONV, True),
    ]
    return NetRules(enc), NetRules(dec)


def _nets(prefix: str = _DEPTH_PREFIX, variant: str = PLAIN) -> dict[str, tuple[str, NetRules]]:
    enc, dec = _depth_rules(prefix)
    same = _fomm._SAME_LENGTH["generator"]
    if variant == SPADE:  # no FOMM up_blocks to pair with the encoder's down_blocks
        same = [t for t in same if t[0].startswith("dense_motion_network")]
    return {
        "kp_detector": ("model", NetRules(_fomm.RULES["kp_detector"],
                                          same_length=_fomm._SAME_LENGTH["kp_detector"])),
        "generator": ("model", NetRules(_generator_rules(variant), same_length=same)),
        "discriminator": ("discriminator", _fomm._NETS["discriminator"][1]),
        "depth_encoder": ("model", enc),
        "depth_decoder": ("model", dec),
    }


_IGNORED_TOP = ("optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector", "epoch")
_REQUIRED_TOP = ("generator", "kp_detector")
_DEPTH_HINT = (" (DaGAN's depth network is in its own files: give the folder with encoder.pth and depth.pth, e.g. "
               "depth/models/weights_19, as well)")


def _strip_module(sd: Any) -> Any:
    """A DDP state dict without its ``module.`` prefixes."""
    if isinstance(sd, Mapping) and sd and all(str(k).startswith("module.") for k in sd):
        return {str(k)[len("module."):]: v for k, v in sd.items()}
    return sd


def _is_generator_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("generator"), Mapping)


def _tensors(sd: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensor entries of an official depth file (Monodepth2's height/width/use_stereo dropped)."""
    bad = [str(k) for k, v in sd.items() if not isinstance(v, Tensor) and k not in _DEPTH_META]
    if bad:
        raise CheckpointError(f"DaGAN depth file: unexpected non-tensor entries {', '.join(bad)}")
    return {str(k): v for k, v in sd.items() if isinstance(v, Tensor)}


# ---------------------------------------------------------------------------------------------------------
# which ResNet a depth file is
# ---------------------------------------------------------------------------------------------------------
#: torchvision's ResNets: bottleneck blocks or not, and blocks per stage
_RESNETS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
            101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3))}


def _variant_from_encoder(sd: Mapping[str, Tensor]) -> tuple[int, str]:
    bottleneck = "encoder.layer1.0.conv3.weight" in sd
    counts = tuple(len({m.group(1) for k in sd if (m := re.match(rf"encoder\.layer{i}\.(\d+)\.", k))})
                   for i in range(1, 5))
    for layers, (is_bottleneck, blocks) in _RESNETS.items():
        if blocks == counts and is_bottleneck == bottleneck:
            kind = "Bottleneck" if bottleneck else "BasicBlock"
            return layers, f"encoder with {kind} blocks {'/'.join(map(str, counts))}"
    raise CheckpointError(f"DaGAN depth encoder: {'Bottleneck' if bottleneck else 'BasicBlock'} blocks "
                          f"{'/'.join(map(str, counts))} are no torchvision ResNet (18, 34, 50, 101 or 152)")


def _variant_from_decoder(sd: Mapping[str, Tensor]) -> tuple[int | None, str]:
    """The decoder only tells the block type: its deepest input is 8x (BasicBlock) or 32x (Bottleneck) its first
    skip's width."""
    try:
        deepest = sd["decoder.0.conv.conv.weight"].shape[1]
        w7 = sd["decoder.7.conv.conv.weight"]
    except KeyError as e:
        raise CheckpointError(f"DaGAN depth decoder: missing {e.args[0]}") from None
    first = w7.shape[1] - w7.shape[0]
    ratio = deepest / max(first, 1)
    if ratio == 8:
        return 18, f"decoder for a BasicBlock ResNet ({deepest}-channel deepest feature)"
    if ratio == 32:
        return 50, f"decoder for a Bottleneck ResNet ({deepest}-channel deepest feature)"
    return None, f"decoder with a {deepest}-channel deepest feature"


def depth_variant(encoder: Mapping[str, Tensor] | None = None, decoder: Mapping[str, Tensor] | None = None
                  ) -> tuple[int, str]:
    """``(num_layers, how it was told)`` of official depth files (either or both state dicts); a ResNet-18 encoder
    with a ResNet-50 decoder (or the reverse) is an error naming both."""
    enc = _variant_from_encoder(encoder) if encoder is not None else None
    dec = _variant_from_decoder(decoder) if decoder is not None else None
    if enc is not None and dec is not None and dec[0] is not None:
        basic = enc[0] < 50
        if basic != (dec[0] < 50):
            raise CheckpointError(f"DaGAN depth files do not belong together: the encoder is a ResNet-{enc[0]} "
                                  f"({enc[1]}) but the decoder is a {dec[1]}")
    if enc is not None:
        return enc
    if dec is not None and dec[0] is not None:
        return dec
    raise CheckpointError("DaGAN depth files: cannot tell the ResNet depth "
                          f"({dec[1] if dec else 'no encoder or decoder given'})")


def _variant_error(found: int, how: str, expect: int, where: str) -> CheckpointError:
    got = _VARIANT_FILES.get(found, f"a ResNet-{found}")
    return CheckpointError(
        f"{where} are a ResNet-{found} depth network ({how}; {got}) but the recipe asks for num_layers={expect}: set "
        f"the depth part's num_layers={found} (e.g. --cfg-options model.keypoint_detector.depth.num_layers={found}) "
        f"or give the ResNet-{expect} files")


def _load_depth_files(path: Path, setting: str) -> dict[str, Any]:
    """``{'depth_encoder': sd, 'depth_decoder': sd}`` or ``{'part': sd}`` (a thkit depth part's own state dict)."""
    if not path.exists():
        raise CheckpointError(f"{setting}: no such file or folder {str(path)!r}: set the depth part's weights= (e.g. "
                              f"--cfg-options model.keypoint_detector.depth.weights=PATH) to the folder holding "
                              f"DaGAN's encoder.pth and depth.pth")
    if path.is_dir():
        files = {"depth_encoder": path / "encoder.pth", "depth_decoder": path / "depth.pth"}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise CheckpointError(f"{setting}: folder {str(path)!r} has no {' or '.join(missing)} (expected DaGAN's "
                                  f"depth files encoder.pth and depth.pth)")
        return {k: torch.load(p, map_location="cpu", weights_only=True) for k, p in files.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {"part": load_file(str(path))}
    return {"part": torch.load(path, map_location="cpu", weights_only=True)}


def convert_depth(source: str | Path | Mapping[str, Any], expect_layers: int | None = None,
                  setting: str = "depth weights") -> dict[str, Tensor]:
    """Official depth files (a folder with encoder.pth and depth.pth, a thkit depth file, or the loaded dicts
    ``{'depth_encoder': ..., 'depth_decoder': ...}``) as the state dict of
    :class:`~thkit.encode.depth.MonodepthDepthNet` (``encoder.*``, ``decoder.*``).

    ``expect_layers``: the recipe's ``num_layers``; files of the other ResNet are a one-line CheckpointError saying
    which they are and what to set."""
    where = setting
    if isinstance(source, (str, Path)):
        where = f"{setting} {str(source)!r}"
        source = _load_depth_files(Path(source), setting)
    if "part" in source:  # already in the part's layout
        sd = _tensors(_strip_module(source["part"]))
        enc = {k: v for k, v in sd.items() if k.startswith("encoder.")}
        dec = {k: v for k, v in sd.items() if k.startswith("decoder.")}
        rest = sorted(set(sd) - set(enc) - set(dec))
        if rest:
            raise CheckpointError(f"{where}: keys {', '.join(rest[:5])} are neither encoder.* nor decoder.*")
    else:
        enc = _tensors(_strip_module(source.get("depth_encoder") or {}))
        dec = _tensors(_strip_module(source.get("depth_decoder") or {}))
    if not enc or not dec:
        raise CheckpointError(f"{where}: the depth network needs both its encoder (encoder.pth) and its decoder "
                              f"(depth.pth); got {'no encoder' if not enc else 'no decoder'}")
    layers, how = depth_variant(enc, dec)
    if expect_layers is not None and layers != int(expect_layers):
        raise _variant_error(layers, how, int(expect_layers), where)
    enc_rules, dec_rules = _depth_rules("")
    return {**convert_net("DaGAN", "depth_encoder", enc, enc_rules),
            **convert_net("DaGAN", "depth_decoder", dec, dec_rules)}


# ---------------------------------------------------------------------------------------------------------
# official configuration -> thkit recipe
# ---------------------------------------------------------------------------------------------------------
_TOP = ("dataset_params", "animate_params")
_TOP_IGNORED = ("train_params", "reconstruction_params", "visualizer_params")


def _dagan_recipe(config: Any, patches: Mapping[str, Any] | None, image_size: int | None,
                  align_corners: bool | None, depth_layers: int | None) -> dict[str, Any]:
    cfg = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    cli = _fomm._Section("DaGAN", cfg.pop("cli_args", None), "cli_args")
    depth = _fomm._Section("DaGAN", cfg.pop("depth", None), "depth")
    model_params, whole = _fomm._official_sections("DaGAN", cfg, _TOP, _TOP_IGNORED)
    p = _fomm._Section("DaGAN", patches, "patches")
    stage_widths = p.get("RESNET_STAGE_WIDTHS", None, list)
    decoder_channels = p.get("DEPTH_DECODER_CHANNELS", None, list)
    p.done()
    gen_name = cli.get("generator", PLAIN, str)
    if gen_name not in GENERATOR_RECIPES:
        raise cli.error("generator", f"{gen_name!r}: the official generators are {' and '.join(GENERATOR_RECIPES)}")
    recipe = _fomm._base_recipe(GENERATOR_RECIPES[gen_name])
    m = recipe["model"]

    common = model_params.section("common_params")
    num_kp = common.get("num_kp", kind=int)
    channels = common.get("num_channels", kind=int)
    jacobian = common.get("estimate_jacobian", False, bool)
    common.done()
    if "kp_num" in cli:  # the README's --kp_num 15 overrides the yaml's num_kp
        num_kp = cli.get("kp_num", kind=int)
    if cli.get("kp_detector", "KPDetector", str) != "KPDetector":
        raise cli.error("kp_detector", "only KPDetector exists in the official code")
    if not cli.get("rgbd", True, bool):
        raise cli.error("rgbd", "false: without --rgbd the keypoints see no depth; thkit maps the RGB-D model")
    cli.done()

    kp = model_params.section("kp_detector_params")
    kpd = _fomm._fomm_keypoint_detector(kp, num_kp, channels + 1, jacobian)
    kp.done()
    m["keypoint_detector"].update(kpd)
    layers = depth.get("num_layers", 18, int) if depth_layers is None else int(depth_layers)
    depth.ignore("pretrained")
    scales = depth.get("scales", [0, 1, 2, 3], list)
    depth.done()
    dnet = m["keypoint_detector"]["depth"]
    dnet.update(num_layers=layers, scales=scales, weights=None)
    if stage_widths is not None:
        dnet["stage_widths"] = stage_widths
    if decoder_channels is not None:
        dnet["decoder_channels"] = decoder_channels

    gen = model_params.section("generator_params")
    occlusion = gen.get("estimate_occlusion_map", False, bool)
    dm = gen.section("dense_motion_params")
    m["motion"].update(_fomm._fomm_dense_motion(dm, num_kp, channels, occlusion))
    dm.done()
    widths = dict(block_expansion=gen.get("block_expansion", kind=int),
                  max_features=gen.get("max_features", kind=int), num_down_blocks=gen.get("num_down_blocks", kind=int))
    m["encoder"].update(in_channels=channels, **widths)
    width = min(widths["max_features"], widths["block_expansion"] * 2 ** widths["num_down_blocks"])
    if gen_name == SPADE:  # SPADEGenerator hard-codes its widths (256/4/64/128, 3 image channels) and 4x upsampling
        gen.ignore("num_bottleneck_blocks")
        if width != 256 or widths["num_down_blocks"] != 2 or channels != 3:
            raise gen.error("block_expansion", f"the SPADE generator's decoder hard-codes a 256-channel input at a "
                                               f"quarter of a 3-channel image; these generator_params give "
                                               f"{width} channels after {widths['num_down_blocks']} down blocks on "
                                               f"{channels} channels")
    else:
        m["decoder"].update(out_channels=channels, num_bottleneck_blocks=gen.get("num_bottleneck_blocks", kind=int),
                            **widths)
    m["compensator"].update(channels=width, **widths)
    gen.done()

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
    model_params.done()

    ac = bool(m["warper"]["align_corners"] if align_corners is None else align_corners)
    m["motion"]["align_corners"] = m["warper"]["align_corners"] = ac
    if "align_corners" in m["decoder"]:  # the SPADE decoder's occlusion resize
        m["decoder"]["align_corners"] = ac
    if isinstance((recipe.get("losses") or {}).get("equivariance"), dict):
        recipe["losses"]["equivariance"]["align_corners"] = ac
    dataset = whole.section("dataset_params", False) if whole is not None else None
    recipe["image_size"] = _fomm._image_size("DaGAN", image_size, dataset, recipe["image_size"])
    if whole is not None:
        whole.section("animate_params", False)
    _fomm._set_present(recipe, num_kp=num_kp, align_corners=ac, depth_layers=layers)
    return _fomm._plain(recipe)


@CONVERTERS.register_module(name="dagan")
class DaGANConverter(Converter):
    """DaGAN (Hong et al., CVPR 2022): ``DaGAN_vox_adv_256.pth.tar`` plus the depth folder's encoder.pth / depth.pth."""

    method = "dagan"
    paper = "Depth-Aware Generative Adversarial Network for Talking Head Video Generation (CVPR 2022)"
    files = ("the official checkpoint (DaGAN_vox_adv_256.pth.tar or SPADE_DaGAN_vox_adv_256.pth.tar) and the depth "
             "network's encoder.pth and depth.pth (e.g. depth/models/weights_19)")

    def detect(self, checkpoint: Any) -> tuple[float, str]:
        if not _is_generator_checkpoint(checkpoint):
            return 0.0, "no generator"
        ckpt = {k: _strip_module(v) for k, v in checkpoint.items()}
        if not any(str(k).startswith("AttnModule.") for k in ckpt["generator"]):
            return 0.0, "no depth-aware attention (AttnModule) in the generator"
        nets = _nets(variant=generator_variant(ckpt["generator"]))
        return match_score(ckpt, nets, required=_REQUIRED_TOP, ignored=_IGNORED_TOP)

    def checkpoint_settings(self, checkpoint: Any) -> dict[str, Any]:
        """The decoder the checkpoint's generator variant needs (``model.decoder.type``: ``FOMMDecoder`` for
        DepthAwareGenerator, ``SPADEDecoder`` for SPADEDepthAwareGenerator)."""
        if not _is_generator_checkpoint(checkpoint):
            return {}
        return {"model.decoder.type": _DECODERS[generator_variant(checkpoint["generator"])]}

    def checkpoint_recipe(self, checkpoint: Any) -> str | None:
        """The recipe of the checkpoint's generator variant: ``dagan/vox256`` or ``dagan/vox256_spade``."""
        if not _is_generator_checkpoint(checkpoint):
            return None
        return GENERATOR_RECIPES[generator_variant(checkpoint["generator"])]

    def combine(self, files: Sequence[Any], *, depth_layers: int | None = None,
                generator: str | None = None) -> dict[str, Any]:
        """The checkpoint and the depth files (loaded dicts, in any order; a folder path is read as its
        encoder.pth and depth.pth) as one dict.  ``depth_layers``: the ResNet depth the recipe uses; depth files of
        the other one are a one-line error.  ``generator``: the official generator class the recipe builds
        (``DepthAwareGenerator`` or ``SPADEDepthAwareGenerator``); a checkpoint of the other is a one-line error
        naming the recipe to use."""
        if generator is not None and generator not in GENERATOR_RECIPES:
            raise CheckpointError(f"DaGAN converter: generator={generator!r}; expected "
                                  f"{' or '.join(GENERATOR_RECIPES)}")
        out: dict[str, Any] = {}
        for f in files:
            if isinstance(f, (str, Path)):
                f = _load_depth_files(Path(f), "DaGAN depth folder")
            if _is_generator_checkpoint(f):
                out.update(f)
            elif isinstance(f, Mapping) and ("depth_encoder" in f or "depth_decoder" in f):
                out.update(f)
            elif isinstance(f, Mapping) and any(str(k).startswith("encoder.") for k in f):
                out["depth_encoder"] = f
            elif isinstance(f, Mapping) and any(str(k).startswith("decoder.") for k in f):
                out["depth_decoder"] = f
            else:
                raise CheckpointError("DaGAN converter: a file is neither the generator checkpoint nor a depth "
                                      "encoder.pth / depth.pth")
        if "generator" not in out:
            raise CheckpointError(f"DaGAN converter: no generator checkpoint among the files (expected {self.files})")
        if generator is not None and generator_variant(out["generator"]) != generator:
            raise CheckpointError(_generator_mismatch(generator_variant(out["generator"]), generator))
        if depth_layers is not None and (out.get("depth_encoder") or out.get("depth_decoder")):
            layers, how = depth_variant(out.get("depth_encoder") and _tensors(out["depth_encoder"]),
                                        out.get("depth_decoder") and _tensors(out["depth_decoder"]))
            if layers != int(depth_layers):
                raise _variant_error(layers, how, int(depth_layers), "the depth files")
        return out

    def convert(self, checkpoint: Any) -> dict[str, dict[str, Tensor]]:
        """``{'model': sd, 'discriminator': sd}``; the depth network's weights must be part of ``checkpoint``
        (:meth:`combine`), since the model's keypoint detector holds it."""
        if not isinstance(checkpoint, Mapping):
            raise CheckpointError(f"DaGAN converter: expected a checkpoint dict, got {type(checkpoint).__name__}")
        ckpt = {k: _strip_module(v) for k, v in checkpoint.items()}
        for net in ("depth_encoder", "depth_decoder"):
            if ckpt.get(net) is not None:
                ckpt[net] = _tensors(ckpt[net])
        absent = [n for n in ("depth_encoder", "depth_decoder") if ckpt.get(n) is None]
        if absent and _is_generator_checkpoint(ckpt):
            raise CheckpointError(f"DaGAN converter: no {' and '.join(absent)}{_DEPTH_HINT}")
        if not absent:
            depth_variant(ckpt["depth_encoder"], ckpt["depth_decoder"])  # encoder and decoder belong together
        nets = _nets(variant=generator_variant(ckpt["generator"]) if _is_generator_checkpoint(ckpt) else PLAIN)
        return convert_networks("DaGAN", ckpt, nets, required=_REQUIRED_TOP, ignored=_IGNORED_TOP)

    def recipe_from_official(self, official_config: Mapping[str, Any], patches: Mapping[str, Any] | None = None,
                             *, image_size: int | None = None, align_corners: bool | None = None,
                             depth_layers: int | None = None) -> dict[str, Any]:
        """The official DaGAN configuration (``config/vox-adv-256.yaml``, whole or its ``model_params``, plus the
        fixture's ``cli_args`` (--kp_num, --generator, --rgbd) and ``depth`` (num_layers, scales) sections when
        given) as ``recipes/dagan/vox256.py`` (``--generator SPADEDepthAwareGenerator``:
        ``recipes/dagan/vox256_spade.py``, whose decoder widths the official code hard-codes) with the same widths.
        ``patches``: the parity fixture's ``RESNET_STAGE_WIDTHS`` / ``DEPTH_DECODER_CHANNELS``.  ``depth_layers``:
        the depth ResNet (18: the demo's weights_19, 50: training's); default the ``depth`` section's, else 18.
        ``align_corners``: as FOMM's (the official code on today's torch: False)."""
        return _dagan_recipe(official_config, patches, image_size, align_corners, depth_layers)

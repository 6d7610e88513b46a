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
from typing import Any

import torch

from thkit.convert._rules import (AFFINE, BN, CONV, CONV_NOBIAS, KERNEL, LINEAR, NetRules, Rule, convert_networks,
                                 match_score)
from thkit.convert.base import Converter
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

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

from typing import Any

import torch

from thkit.convert._rules import AFFINE, BN, CONV, KERNEL, SN_CONV, Found, NetRules, Rule, convert_networks, match_score
from thkit.convert.base import Converter
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

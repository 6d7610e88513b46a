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

import re
from collections import defaultdict
from collections.abc import Mapping

import torch

from thkit.convert import register_converter
from thkit.errors import CheckpointError

Tensor = torch.Tensor

# tensor sets owned by each module type
CONV = ("weight", "bias")
CONV_NOBIAS = ("weight",)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
AFFINE = ("weight", "bias")  # InstanceNorm2d(affine=True): no running statistics
SN_CONV = ("weight_orig", "weight_u", "weight_v", "bias")
KERNEL = ("weight",)  # anti-alias Gaussian kernel buffer

#: per official network: (official module regex, thkit module template, tensors, required, family)
#: ``family`` names an indexed group whose indices must run 0..n-1 without gaps.
_HG = r"(?P<hg>{p})\.(?P<part>encoder\.down_blocks|decoder\.up_blocks)\.(?P<i>\d+)\.(?P<sub>conv|norm)"

RULES: dict[str, list[tuple[str, str, tuple[str, ...] | dict[str, tuple[str, ...]], bool, str | None]]] = {
    "kp_detector": [
        (r"predictor\.encoder\.down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
         "keypoint_detector.predictor.encoder.down_blocks.{i}.{sub}", {"conv": CONV, "norm": BN}, True,
         "kp_detector.predictor.encoder.down_blocks"),
        (r"predictor\.decoder\.up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
         "keypoint_detector.predictor.decoder.up_blocks.{i}.{sub}", {"conv": CONV, "norm": BN}, True,
         "kp_detector.predictor.decoder.up_blocks"),
        (r"kp", "keypoint_detector.kp", CONV, True, None),
        (r"jacobian", "keypoint_detector.jacobian", CONV, False, None),
        (r"down", "keypoint_detector.down", KERNEL, False, None),
    ],
    "generator": [
        (r"dense_motion_network\.hourglass\.encoder\.down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
         "motion.hourglass.encoder.down_blocks.{i}.{sub}", {"conv": CONV, "norm": BN}, True,
         "generator.dense_motion_network.hourglass.encoder.down_blocks"),
        (r"dense_motion_network\.hourglass\.decoder\.up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
         "motion.hourglass.decoder.up_blocks.{i}.{sub}", {"conv": CONV, "norm": BN}, True,
         "generator.dense_motion_network.hourglass.decoder.up_blocks"),
        (r"dense_motion_network\.mask", "motion.mask", CONV, True, None),
        (r"dense_motion_network\.occlusion", "motion.occlusion", CONV, False, None),
        (r"dense_motion_network\.down", "motion.down", KERNEL, False, None),
        (r"first\.(?P<sub>conv|norm)", "encoder.first.{sub}", {"conv": CONV, "norm": BN}, True, None),
        (r"down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "encoder.down_blocks.{i}.{sub}",
         {"conv": CONV, "norm": BN}, False, "generator.down_blocks"),
        (r"bottleneck\.r(?P<i>\d+)\.(?P<sub>conv1|conv2|norm1|norm2)", "decoder.bottleneck.{i}.{sub}",
         {"conv1": CONV, "conv2": CONV, "norm1": BN, "norm2": BN}, False, "generator.bottleneck"),
        (r"up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "decoder.up_blocks.{i}.{sub}",
         {"conv": CONV, "norm": BN}, False, "generator.up_blocks"),
        (r"final", "decoder.final", CONV, True, None),
    ],
    "discriminator": [
        (r"discs\.(?P<s>[0-9-]+)\.down_blocks\.(?P<i>\d+)\.conv", "discs.{s}.down_blocks.{i}.conv",
         (CONV, SN_CONV), True, "discriminator.discs.{s}.down_blocks"),
        (r"discs\.(?P<s>[0-9-]+)\.down_blocks\.(?P<i>\d+)\.norm", "discs.{s}.down_blocks.{i}.norm",
         AFFINE, False, None),
        (r"discs\.(?P<s>[0-9-]+)\.conv", "discs.{s}.conv", (CONV, SN_CONV), True, None),
    ],
}

#: families whose lengths must agree (encoder/decoder pairs)
_SAME_LENGTH = [
    ("kp_detector.predictor.encoder.down_blocks", "kp_detector.predictor.decoder.up_blocks"),
    ("generator.dense_motion_network.hourglass.encoder.down_blocks",
     "generator.dense_motion_network.hourglass.decoder.up_blocks"),
    ("generator.down_blocks", "generator.up_blocks"),
]

#: where each official network lands in the thkit checkpoint
_TARGET = {"kp_detector": "model", "generator": "model", "discriminator": "discriminator"}
_IGNORED_TOP = {"optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector", "epoch"}
_REQUIRED_TOP = ("generator", "kp_detector")


def _owned(spec, sub: str | None, present: set[str]) -> tuple[str, ...]:
    """The tensor set of a module: a fixed tuple, one per sub-module name, or alternatives (plain vs SN)."""
    if isinstance(spec, dict):
        return spec[sub]
    if spec and isinstance(spec[0], tuple):  # alternatives: pick the one that the present names fit best
        for alt in spec:
            if present <= set(alt) and present & set(alt):
                return alt
        return max(spec, key=lambda alt: len(present & set(alt)))
    return spec


def _convert_net(net: str, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    rules = [(re.compile(pat + r"$"), tpl, spec, req, fam) for pat, tpl, spec, req, fam in RULES[net]]
    modules: dict[tuple[int, str], dict] = {}
    unknown: list[str] = []
    for key, tensor in sd.items():
        mod, _, leaf = key.rpartition(".")
        for r, (rx, tpl, spec, _req, fam) in enumerate(rules):
            m = rx.match(mod)
            if m:
                entry = modules.setdefault((r, mod), {"match": m.groupdict(), "tensors": {}})
                entry["tensors"][leaf] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"FOMM converter: unknown keys in official '{net}': {', '.join(sorted(unknown))}")

    out: dict[str, Tensor] = {}
    missing: list[str] = []
    bad: list[str] = []
    families: dict[str, set[int]] = defaultdict(set)
    seen_rules = set()
    for (r, mod), entry in modules.items():
        _rx, tpl, spec, _req, fam = rules[r]
        groups = entry["match"]
        owned = _owned(spec, groups.get("sub"), set(entry["tensors"]))
        for leaf in entry["tensors"]:
            if leaf not in owned:
                bad.append(f"{mod}.{leaf}")
        for leaf in owned:
            if leaf not in entry["tensors"]:
                missing.append(f"{net}.{mod}.{leaf}")
        if fam is not None:
            families[fam.format(**groups)].add(int(groups["i"]))
        seen_rules.add(r)
        target = tpl.format(**groups)
        for leaf, tensor in entry["tensors"].items():
            out[f"{target}.{leaf}"] = tensor
    for r, (_rx, tpl, _spec, req, _fam) in enumerate(rules):
        if req and r not in seen_rules:
            missing.append(f"{net}.{RULES[net][r][0]}.*")
    for fam, idx in families.items():
        gaps = sorted(set(range(max(idx) + 1)) - idx)
        missing.extend(f"{fam}.{i}.*" for i in gaps)
    for a, b in _SAME_LENGTH:
        if a.split(".")[0] == net and (a in families or b in families):
            na, nb = len(families.get(a, ())), len(families.get(b, ()))
            if na != nb:
                missing.append(f"{a if na < nb else b} (has {min(na, nb)} blocks, its pair has {max(na, nb)})")
    if net == "discriminator":  # every pix2pix block but the first has an InstanceNorm
        norms = {(e["match"]["s"], int(e["match"]["i"])) for (r, _m), e in modules.items() if rules[r][1].endswith(".norm")}
        for fam, idx in families.items():
            scale = fam.split(".")[2]
            missing.extend(f"discriminator.discs.{scale}.down_blocks.{i}.norm.*" for i in sorted(idx)
                           if i > 0 and (scale, i) not in norms)
    if bad:
        raise CheckpointError(f"FOMM converter: unknown keys in official '{net}': {', '.join(sorted(bad))}")
    if missing:
        raise CheckpointError(f"FOMM converter: missing keys in official checkpoint: {', '.join(sorted(missing))}")
    return out


@register_converter("fomm")
def convert_fomm(official: Mapping[str, Mapping[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
    """Map an official FOMM checkpoint dict to ``{'model': sd, 'discriminator': sd}`` (the latter if present)."""
    if not isinstance(official, Mapping):
        raise CheckpointError(f"FOMM converter: expected a checkpoint dict, got {type(official).__name__}")
    absent = [n for n in _REQUIRED_TOP if n not in official]
    if absent:
        raise CheckpointError(f"FOMM converter: missing networks in official checkpoint: {', '.join(absent)} "
                              f"(has: {', '.join(map(str, official))})")
    unknown = [n for n in official if n not in _TARGET and n not in _IGNORED_TOP]
    if unknown:
        raise CheckpointError(f"FOMM converter: unknown entries in official checkpoint: {', '.join(map(str, unknown))}")
    result: dict[str, dict[str, Tensor]] = {}
    for net, dest in _TARGET.items():
        if net not in official or official[net] is None:
            continue
        sd = official[net]
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"FOMM converter: official '{net}' is not a state dict ({type(sd).__name__})")
        converted = _convert_net(net, sd)
        bucket = result.setdefault(dest, {})
        clash = sorted(set(bucket) & set(converted))
        if clash:
            raise CheckpointError(f"FOMM converter: keys filled twice: {', '.join(clash)}")
        bucket.update(converted)
    return result

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
from collections import defaultdict
from collections.abc import Iterable, Mapping

import torch

from thkit.convert import register_converter
from thkit.errors import CheckpointError

Tensor = torch.Tensor

LINEAR = ("weight", "bias")
CONV = ("weight", "bias")
CONV_NOBIAS = ("weight",)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
AFFINE = ("weight", "bias")  # InstanceNorm2d(affine=True): no running statistics
KERNEL = ("weight",)  # anti-alias Gaussian kernel buffer


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


_RESNET = _resnet18_modules()
#: the stride-2 stages' projection shortcut; stage 1 has one only when the stem and stage widths differ
_RESNET_DOWNSAMPLE = re.compile(r"layer(?P<s>[1-4])\.0\.downsample\.(?P<j>[01])$")

#: (official module regex, thkit template, owned tensors (tuple, or dict by the 'sub' group), family:
#: the module prefix of an indexed group whose indices must run 0..n-1)
_FAMILY_RULES: dict[str, list[tuple[str, str, object, str | None]]] = {
    "dense_motion_network": [
        (r"down", "motion.down", KERNEL, None),
        (r"hourglass\.encoder\.down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
         "motion.hourglass.encoder.down_blocks.{i}.{sub}", {"conv": CONV, "norm": AFFINE},
         "hourglass.encoder.down_blocks"),
        (r"hourglass\.decoder\.up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)",
         "motion.hourglass.decoder.up_blocks.{i}.{sub}", {"conv": CONV, "norm": AFFINE},
         "hourglass.decoder.up_blocks"),
        (r"maps", "motion.maps", CONV, None),
        (r"up\.(?P<i>\d+)\.(?P<sub>conv|norm)", "motion.up.{i}.{sub}", {"conv": CONV, "norm": AFFINE}, "up"),
        (r"occlusion\.(?P<i>\d+)", "motion.occlusion.{i}", CONV, "occlusion"),
    ],
    "inpainting_network": [
        (r"first\.(?P<sub>conv|norm)", "encoder.first.{sub}", {"conv": CONV, "norm": AFFINE}, None),
        (r"down_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "encoder.down_blocks.{i}.{sub}",
         {"conv": CONV, "norm": AFFINE}, "down_blocks"),
        (r"resblock\.(?P<i>\d+)\.(?P<sub>conv1|conv2|norm1|norm2)", "decoder.resblock.{i}.{sub}",
         {"conv1": CONV, "conv2": CONV, "norm1": AFFINE, "norm2": AFFINE}, "resblock"),
        (r"up_blocks\.(?P<i>\d+)\.(?P<sub>conv|norm)", "decoder.up_blocks.{i}.{sub}",
         {"conv": CONV, "norm": AFFINE}, "up_blocks"),
        (r"final", "decoder.final", CONV, None),
    ],
}
#: modules that must be present (the official constructors always create them)
_REQUIRED_MODULES = {
    "dense_motion_network": ("maps", "occlusion.0", "hourglass.encoder.down_blocks.0.conv",
                             "hourglass.decoder.up_blocks.0.conv"),
    "inpainting_network": ("first.conv", "first.norm", "final", "down_blocks.0.conv"),
}
#: (family a, family b, factor): len(b) must equal factor * len(a)
_FAMILY_LENGTHS = {
    "dense_motion_network": [("hourglass.encoder.down_blocks", "hourglass.decoder.up_blocks", 1)],
    "inpainting_network": [("down_blocks", "up_blocks", 1), ("down_blocks", "resblock", 2)],
}

#: official network -> (destination checkpoint entry, prefix inside it, converter kind)
_NETS = {
    "kp_detector": ("model", "keypoint_detector.backbone.", "resnet:fg_encoder"),
    "bg_predictor": ("model", "motion.bg_predictor.backbone.", "resnet:bg_encoder"),
    "dense_motion_network": ("model", "", "family"),
    "inpainting_network": ("model", "", "family"),
    "avd_network": ("avd_network", "", "avd"),
}
_REQUIRED_NETS = ("kp_detector", "dense_motion_network", "inpainting_network")
_IGNORED_TOP = {"optimizer", "optimizer_bg_predictor", "optimizer_avd", "epoch"}


def _split(sd: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    mods: dict[str, dict[str, Tensor]] = defaultdict(dict)
    for key, tensor in sd.items():
        mod, _, leaf = str(key).rpartition(".")
        mods[mod][leaf] = tensor
    return mods


def _check_tensors(net: str, mod: str, tensors: Iterable[str], owned: tuple[str, ...], bad: list, missing: list):
    tensors = set(tensors)
    bad.extend(f"{net}.{mod}.{t}" for t in sorted(tensors - set(owned)))
    missing.extend(f"{net}.{mod}.{t}" for t in owned if t not in tensors)


def _fail(bad: list[str], missing: list[str]) -> None:
    if bad:
        raise CheckpointError(f"TPSMM converter: unknown keys in official checkpoint: {', '.join(bad)}")
    if missing:
        raise CheckpointError(f"TPSMM converter: missing keys in official checkpoint: {', '.join(missing)}")


def _convert_fixed(net: str, sd: Mapping[str, Tensor], expected: dict[str, tuple[str, ...]], strip: str,
                   prefix: str, resnet: bool) -> dict[str, Tensor]:
    """Nets of fixed structure (ResNet-18, AVD MLPs): every expected module present, nothing else.

    ``strip`` is the official prefix of the net's modules (``fg_encoder.``), ``prefix`` the thkit one.
    For a ResNet, the projection shortcuts (``layerN.0.downsample.{0,1}``) are also accepted; stages 2-4
    (stride 2) must have one, stage 1 has one only when its width differs from the stem's.
    """
    bad: list[str] = []
    missing: list[str] = []
    out: dict[str, Tensor] = {}
    mods = _split(sd)
    for mod, tensors in mods.items():
        if strip and not mod.startswith(strip):
            bad.extend(f"{net}.{mod}.{t}" for t in tensors)
            continue
        local = mod[len(strip):]
        owned = expected.get(local)
        if owned is None and resnet:
            m = _RESNET_DOWNSAMPLE.match(local)
            if m:
                owned = CONV_NOBIAS if m["j"] == "0" else BN
        if owned is None:
            bad.extend(f"{net}.{mod}.{t}" for t in tensors)
            continue
        _check_tensors(net, mod, tensors, owned, bad, missing)
        out.update({f"{prefix}{local}.{t}": v for t, v in tensors.items()})
    present = {m[len(strip):] for m in mods if m.startswith(strip)}
    missing.extend(f"{net}.{strip}{m}.*" for m in expected if m not in present)
    if resnet:  # a block's shortcut comes as a pair: conv and its BatchNorm
        for s in range(1, 5):
            pair = {f"layer{s}.0.downsample.0", f"layer{s}.0.downsample.1"}
            if len(pair & present) == 1:
                missing.extend(f"{net}.{strip}{m}.*" for m in sorted(pair - present))
        for s in range(2, 5):  # stride-2 stages always project
            if f"layer{s}.0.downsample.0" not in present:
                missing.append(f"{net}.{strip}layer{s}.0.downsample.*")
    _fail(sorted(bad), sorted(missing))
    return out


def _convert_family(net: str, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Nets whose depth follows the config (dense motion, inpainting): rules, required modules, families."""
    rules = [(re.compile(p + r"$"), tpl, spec, fam) for p, tpl, spec, fam in _FAMILY_RULES[net]]
    bad: list[str] = []
    missing: list[str] = []
    out: dict[str, Tensor] = {}
    families: dict[str, set[int]] = defaultdict(set)
    mods = _split(sd)
    for mod, tensors in mods.items():
        for rx, tpl, spec, fam in rules:
            m = rx.match(mod)
            if m is None:
                continue
            groups = m.groupdict()
            owned = spec[groups["sub"]] if isinstance(spec, dict) else spec
            _check_tensors(net, mod, tensors, owned, bad, missing)
            if fam is not None:
                families[fam].add(int(groups["i"]))
            target = tpl.format(**groups)
            out.update({f"{target}.{t}": v for t, v in tensors.items()})
            break
        else:
            bad.extend(f"{net}.{mod}.{t}" for t in tensors)
    missing.extend(f"{net}.{m}.*" for m in _REQUIRED_MODULES[net] if m not in mods)
    for fam, idx in families.items():
        missing.extend(f"{net}.{fam}.{i}.*" for i in sorted(set(range(max(idx) + 1)) - idx))
    for fam in {f for _, _, _, f in _FAMILY_RULES[net] if f}:  # blocks with a conv but no norm, or vice versa
        for i in families.get(fam, ()):
            subs = {mod.rsplit(".", 1)[-1] for mod in mods if re.match(rf"{re.escape(fam)}\.{i}\.\w+$", mod)}
            spec = next(s for _, _, s, f in _FAMILY_RULES[net] if f == fam)
            if isinstance(spec, dict):
                missing.extend(f"{net}.{fam}.{i}.{s}.*" for s in spec if s not in subs)
    for a, b, factor in _FAMILY_LENGTHS[net]:
        na, nb = len(families.get(a, ())), len(families.get(b, ()))
        if nb != factor * na:
            missing.append(f"{net}: {b} has {nb} blocks but {a} has {na} (expected {factor * na})")
    _fail(sorted(bad), sorted(missing))
    return out


@register_converter("tpsmm")
def convert_tpsmm(official: Mapping[str, Mapping[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
    """Map an official TPSMM checkpoint dict to ``{'model': sd, 'avd_network': sd}`` (the latter if present)."""
    if not isinstance(official, Mapping):
        raise CheckpointError(f"TPSMM converter: expected a checkpoint dict, got {type(official).__name__}")
    absent = [n for n in _REQUIRED_NETS if official.get(n) is None]
    if absent:
        raise CheckpointError(f"TPSMM converter: missing networks in official checkpoint: {', '.join(absent)} "
                              f"(has: {', '.join(map(str, official)) or 'nothing'})")
    unknown = [str(n) for n in official if n not in _NETS and n not in _IGNORED_TOP]
    if unknown:
        raise CheckpointError(f"TPSMM converter: unknown entries in official checkpoint: {', '.join(unknown)} "
                              f"(expected {', '.join(_NETS)}, optimizer*, epoch)")
    result: dict[str, dict[str, Tensor]] = {}
    for net, (dest, prefix, kind) in _NETS.items():
        sd = official.get(net)
        if sd is None:
            continue
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"TPSMM converter: official '{net}' is not a state dict ({type(sd).__name__})")
        if kind.startswith("resnet:"):
            converted = _convert_fixed(net, sd, _RESNET, kind.split(":", 1)[1] + ".", prefix, resnet=True)
        elif kind == "avd":
            converted = _convert_fixed(net, sd, _avd_modules(), "", prefix, resnet=False)
        else:
            converted = _convert_family(net, sd)
        bucket = result.setdefault(dest, {})
        clash = sorted(set(bucket) & set(converted))
        if clash:
            raise CheckpointError(f"TPSMM converter: keys filled twice: {', '.join(clash)}")
        bucket.update(converted)
    return result

"""Official SMAC checkpoints (BasicSR ``save_network`` files) to thkit.

Files: ``net_g_*.pth`` = ``{'params': sd, 'params_ema': sd}`` (AppMotionCompFormer; the official demo and test.yml
load ``params_ema``, so that is the default), ``net_motion_estimator_*.pth`` = ``{'params': sd}``
(Motion_Estimator_keypoint_aware) and optionally ``net_d_*.pth`` = ``{'params': sd}`` (VQGANDiscriminator).
:func:`prepare` (called by :func:`thkit.checkpoint.convert_official`) combines them into
``{'net_g': sd, 'motion_estimator': sd[, 'net_d': sd]}``; :func:`convert_smac` maps that onto the
``recipes/smac/*`` model (``model``) and discriminator (``discriminator``).

The mapping is a table of module rules and is total in both directions: an official key no rule matches, a
tensor a module of its type does not own, a module missing one of its tensors, a required module that is absent
and an indexed family with a gap are all errors naming the key.

=========================================================  ============================================================
official                                                    thkit (``model.``)
=========================================================  ============================================================
``motion_estimator.kp_detector.*``                          ``keypoint_detector.*``
``motion_estimator.dense_motion_network.*``                 ``motion.*``
``net_g.encoder.blocks.i``                                  ``encoder.blocks.i``
``net_g.generator.blocks.i``                                ``decoder.blocks.i``
``net_g.fuse_convs_dict.{S}.{encode_enc,scale,shift}``       ``decoder.fusion.j.{encode,scale,shift}`` (j: rank of S)
``net_g.fuse_ms_dict.{S}``                                  ``decoder.fusion.j.add``
``net_g.quantize_motion`` / ``position_emb_motion``         ``compensator.motion.codebook`` / ``.transformer.
                                                            position_emb``
``net_g.motion_block.i``                                    ``compensator.motion.transformer.layers.i``
``net_g.motion_emb`` / ``to_motion``                        ``compensator.motion.flow_encoder`` / ``.flow_decoder``
``net_g.driving_kp_enc``, ``warped_source_enc_{S}``          ``compensator.motion.kp_proj``, ``.feature_proj.j``
``net_g.motion_query_enc_1`` / ``_2``                       ``compensator.motion.query_mix`` / ``.token_mix``
``net_g.BasicMotionEncoder``, ``to_context.k``, ``refine``  ``compensator.motion.motion_encoder``, ``.context_proj.k``,
                                                            ``.refine``
``net_g.quantize_app`` / ``position_emb_app``               ``compensator.appearance.codebook`` / ``.transformer.
                                                            position_emb``
``net_g.app_block.i``                                       ``compensator.appearance.transformer.layers.i``
``net_g.app_feat_emb_{S}``, ``to_app_feat_{S}``             ``compensator.appearance.embed.j.proj``, ``.unembed.j.proj``
                                                            (1x1 conv weights at S = 32 become Linear weights)
``net_d.main.*``                                            ``discriminator``: ``main.*``
=========================================================  ============================================================

``j`` ranks the spatial sizes ``S`` of a family in increasing order (coarse to fine), as thkit orders scales.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from thkit.convert._rules import BN, CONV, CONV_NOBIAS, KERNEL, Found, NetRules, Rule, convert_networks, match_score
from thkit.convert.base import Converter
from thkit.convert.fomm import _base_recipe, _fomm_dense_motion, _fomm_keypoint_detector, _plain, _Section, _set_present
from thkit.errors import CheckpointError
from thkit.registry import CONVERTERS

Tensor = torch.Tensor


def _leaves(*names: str, params: Sequence[str] = ("weight", "bias")) -> frozenset[str]:
    return frozenset(f"{n}.{p}" if n else p for n in names for p in params)


RES = _leaves("norm1", "conv1", "norm2", "conv2")
RES_OUT = RES | _leaves("conv_out")
ATTN = _leaves("norm", "q", "k", "v", "proj_out")
SAMPLE = _leaves("conv")
MHA_LAYER = (frozenset({f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in ("in_proj_weight", "in_proj_bias")})
             | _leaves("self_attn.out_proj", "cross_attn.out_proj", "conv1", "conv2", "norm1", "norm2", "norm3"))
SFT = _leaves("scale.0", "scale.2", "shift.0", "shift.2")
SFT_RES = frozenset({f"encode_enc.{k}" for k in RES}) | SFT
SFT_RES_OUT = frozenset({f"encode_enc.{k}" for k in RES_OUT}) | SFT
BASIC_MOTION = _leaves("convc1", "convc2", "convf1", "convf2", "conv")
REFINE = _leaves("convc1", "conv1", "conv2", "convo1", "convo2")
PARAM = frozenset({""})  # a bare nn.Parameter (the key is the module path itself)
HG_BLOCK = frozenset({f"conv.{p}" for p in ("weight", "bias")} | {f"norm.{p}" for p in BN})

#: rules: (regex over the full key with groups ``mod`` and ``leaf`` (and naming groups), thkit module template,
#: allowed leaf sets, required, family (an indexed group that must be gapless), size family (ranked by S))

_HG = r"(?P<mod>{p}\.(?P<part>encoder\.down_blocks|decoder\.up_blocks)\.(?P<i>\d+))\.(?P<leaf>.+)"

RULES: dict[str, list[Rule]] = {
    "motion_estimator": [
        Rule(_HG.format(p=r"kp_detector\.predictor"),
             "keypoint_detector.predictor.{part}.{i}", [HG_BLOCK], True, "kp_detector.predictor.{part}", None),
        Rule(r"(?P<mod>kp_detector\.kp)\.(?P<leaf>.+)", "keypoint_detector.kp", [CONV], True, None, None),
        Rule(r"(?P<mod>kp_detector\.jacobian)\.(?P<leaf>.+)", "keypoint_detector.jacobian", [CONV], False, None, None),
        Rule(r"(?P<mod>kp_detector\.down)\.(?P<leaf>.+)", "keypoint_detector.down", [KERNEL], False, None, None),
        Rule(_HG.format(p=r"dense_motion_network\.hourglass"), "motion.hourglass.{part}.{i}", [HG_BLOCK], True,
             "dense_motion_network.hourglass.{part}", None),
        Rule(r"(?P<mod>dense_motion_network\.mask)\.(?P<leaf>.+)", "motion.mask", [CONV], True, None, None),
        Rule(r"(?P<mod>dense_motion_network\.occlusion)\.(?P<leaf>.+)", "motion.occlusion", [CONV], True, None, None),
        Rule(r"(?P<mod>dense_motion_network\.down)\.(?P<leaf>.+)", "motion.down", [KERNEL], False, None, None),
    ],
    "net_g": [
        Rule(r"(?P<mod>encoder\.blocks\.(?P<i>\d+))\.(?P<leaf>.+)", "encoder.blocks.{i}",
             [CONV, RES, RES_OUT, ATTN, SAMPLE], True, "encoder.blocks", None),
        Rule(r"(?P<mod>generator\.blocks\.(?P<i>\d+))\.(?P<leaf>.+)", "decoder.blocks.{i}",
             [CONV, RES, RES_OUT, ATTN, SAMPLE], True, "generator.blocks", None),
        Rule(r"(?P<mod>fuse_convs_dict\.(?P<s>\d+))\.(?P<leaf>encode_enc\..+)", "decoder.fusion.{j}",
             [SFT_RES, SFT_RES_OUT], False, None, "fusion"),
        Rule(r"(?P<mod>fuse_convs_dict\.(?P<s>\d+))\.(?P<leaf>(scale|shift)\..+)", "decoder.fusion.{j}",
             [SFT_RES, SFT_RES_OUT], False, None, "fusion"),
        Rule(r"(?P<mod>fuse_ms_dict\.(?P<s>\d+))\.(?P<leaf>.+)", "decoder.fusion.{j}.add", [CONV],
             size_family="fusion"),
        # motion codebook compensation
        Rule(r"(?P<mod>quantize_motion)\.(?P<leaf>embedding\.weight)", "compensator.motion.codebook",
             [frozenset({"embedding.weight"})], True, None, None),
        Rule(r"(?P<mod>position_emb_motion)(?P<leaf>)", "compensator.motion.transformer.position_emb", [PARAM], False,
             None, None),
        Rule(r"(?P<mod>motion_block\.(?P<i>\d+))\.(?P<leaf>.+)", "compensator.motion.transformer.layers.{i}",
             [MHA_LAYER], True, "motion_block"),
        Rule(r"(?P<mod>motion_emb\.0)\.(?P<leaf>.+)", "compensator.motion.flow_encoder.0", [CONV], True, None, None),
        Rule(r"(?P<mod>motion_emb\.1)\.(?P<leaf>.+)", "compensator.motion.flow_encoder.1", [SAMPLE], True, None, None),
        Rule(r"(?P<mod>motion_emb\.2)\.(?P<leaf>.+)", "compensator.motion.flow_encoder.2", [RES], True, None, None),
        Rule(r"(?P<mod>to_motion\.0)\.(?P<leaf>.+)", "compensator.motion.flow_decoder.0", [SAMPLE], True, None, None),
        Rule(r"(?P<mod>to_motion\.1)\.(?P<leaf>.+)", "compensator.motion.flow_decoder.1", [RES], True, None, None),
        Rule(r"(?P<mod>to_motion\.(?P<i>[23]))\.(?P<leaf>.+)", "compensator.motion.flow_decoder.{i}", [CONV], True,
             None, None),
        Rule(r"(?P<mod>driving_kp_enc)\.(?P<leaf>.+)", "compensator.motion.kp_proj", [CONV], True, None, None),
        Rule(r"(?P<mod>warped_source_enc_(?P<s>\d+))\.(?P<leaf>.+)", "compensator.motion.feature_proj.{j}", [CONV],
             True, size_family="motion_scales"),
        Rule(r"(?P<mod>motion_query_enc_1)\.(?P<leaf>.+)", "compensator.motion.query_mix", [CONV], True, None, None),
        Rule(r"(?P<mod>motion_query_enc_2)\.(?P<leaf>.+)", "compensator.motion.token_mix", [CONV], True, None, None),
        Rule(r"(?P<mod>BasicMotionEncoder)\.(?P<leaf>.+)", "compensator.motion.motion_encoder", [BASIC_MOTION], True,
             None, None),
        Rule(r"(?P<mod>to_context\.(?P<i>\d+))\.(?P<leaf>.+)", "compensator.motion.context_proj.{i}", [CONV], True,
             "to_context", None),
        Rule(r"(?P<mod>refine)\.(?P<leaf>.+)", "compensator.motion.refine", [REFINE], True, None, None),
        # appearance codebook compensation
        Rule(r"(?P<mod>quantize_app)\.(?P<leaf>embedding\.weight)", "compensator.appearance.codebook",
             [frozenset({"embedding.weight"})], False, None, None),
        Rule(r"(?P<mod>position_emb_app)(?P<leaf>)", "compensator.appearance.transformer.position_emb", [PARAM], False,
             None, None),
        Rule(r"(?P<mod>app_block\.(?P<i>\d+))\.(?P<leaf>.+)", "compensator.appearance.transformer.layers.{i}",
             [MHA_LAYER], False, "app_block", None),
        Rule(r"(?P<mod>app_feat_emb_(?P<s>\d+))(\.1)?\.(?P<leaf>weight|bias)", "compensator.appearance.embed.{j}.proj",
             [CONV], False, None, "appearance_scales"),
        Rule(r"(?P<mod>to_app_feat_(?P<s>\d+))(\.0)?\.(?P<leaf>weight|bias)", "compensator.appearance.unembed.{j}.proj",
             [CONV], False, None, "appearance_scales_out"),
    ],
    "net_d": [
        # the LeakyReLUs own no tensors, so the indices have gaps: no family check
        Rule(r"(?P<mod>main\.(?P<i>\d+))\.(?P<leaf>.+)", "main.{i}", [CONV, CONV_NOBIAS, BN], True, None, None),
    ],
}

#: size families that must list the same sizes
_SAME_SIZES = [("fusion", "fusion"), ("appearance_scales", "appearance_scales_out")]
_REQUIRED = ("net_g", "motion_estimator")


def _strip_module(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a DDP ``module.`` prefix (the BasicSR loader does the same)."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def _net_g_checks(net: str, found: Found) -> list[str]:
    """Multi-scale consistency of net_g: fusion, feature projections and the appearance branch."""
    missing: list[str] = []
    merged, sizes = found.modules, found.sizes
    for a, b in _SAME_SIZES:
        if a in sizes or b in sizes:
            sa, sb = sizes.get(a, set()), sizes.get(b, set())
            if a == b:  # fusion: SFT blocks and additive convs must cover the same sizes
                sft = {int(e.groups["s"]) for m, e in merged.items() if m.startswith("fuse_convs_dict.")}
                add = {int(e.groups["s"]) for m, e in merged.items() if m.startswith("fuse_ms_dict.")}
                if sft != add:
                    missing += [f"{net}.fuse_convs_dict.{s}.*" for s in sorted(add - sft)]
                    missing += [f"{net}.fuse_ms_dict.{s}.*" for s in sorted(sft - add)]
            elif sa != sb:
                missing += [f"{net}.app_feat_emb_{s}.*" for s in sorted(sb - sa)]
                missing += [f"{net}.to_app_feat_{s}.*" for s in sorted(sa - sb)]
    n_ctx, n_proj = len(found.families.get("to_context", ())), len(sizes.get("motion_scales", ()))
    if n_ctx != n_proj:
        missing.append(f"{net}.to_context / warped_source_enc_* (have {n_ctx} and {n_proj}; one per scale)")
    if any(m.startswith(("app_block.", "quantize_app", "app_feat_emb_")) for m in merged):
        for need in ("quantize_app", "app_block", "app_feat_emb_", "to_app_feat_"):
            if not any(m.startswith(need) for m in merged):
                missing.append(f"{net}.{need}* (the appearance compensation is incomplete)")
    return missing


def _net_g_adapt(rule: Rule, leaf: str, tensor: Tensor) -> tuple[str, Tensor]:
    if rule.size_family in ("appearance_scales", "appearance_scales_out") and tensor.dim() == 4:
        tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])  # 1x1 conv -> Linear
    if rule.size_family == "fusion":
        leaf = re.sub(r"^encode_enc\.", "encode.", leaf)
    return leaf, tensor


#: official network -> (destination checkpoint entry, rules)
_NETS = {
    "motion_estimator": ("model", NetRules(RULES["motion_estimator"])),
    "net_g": ("model", NetRules(RULES["net_g"], checks=(_net_g_checks,), adapt=_net_g_adapt)),
    "net_d": ("discriminator", NetRules(RULES["net_d"])),
}


def _pick(obj: Any, use_ema: bool, what: str) -> dict[str, Tensor]:
    """The state dict of a BasicSR file: ``params_ema`` (if asked and present) else ``params``."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"SMAC converter: {what} is not a BasicSR checkpoint dict ({type(obj).__name__})")
    if use_ema and "params_ema" in obj:
        sd = obj["params_ema"]
    elif "params" in obj:
        if use_ema and what == "net_g":
            warnings.warn("SMAC converter: net_g has no 'params_ema'; using 'params' (as BasicSR's loader does)",
                          stacklevel=3)
        sd = obj["params"]
    else:
        raise CheckpointError(f"SMAC converter: {what} has neither 'params' nor 'params_ema' "
                              f"(has: {', '.join(map(str, obj))})")
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"SMAC converter: {what}'s weights are not a state dict ({type(sd).__name__})")
    return _strip_module(sd)


def _identify(sd: Mapping[str, Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith(("kp_detector.", "dense_motion_network.")) for k in keys):
        return "motion_estimator"
    if any(k.startswith("main.") for k in keys):
        return "net_d"
    if any(k.startswith(("encoder.blocks.", "generator.blocks.", "quantize_motion.")) for k in keys):
        return "net_g"
    return "unknown"


def prepare(files: Sequence[Any], use_ema: bool = True) -> dict[str, dict[str, Tensor]]:
    """Combine loaded official files into ``{'net_g': sd, 'motion_estimator': sd[, 'net_d': sd]}``.

    Each file is a BasicSR dict (``params`` / ``params_ema``), recognised by its keys; ``use_ema`` picks
    ``params_ema`` for net_g (the official default; falls back to ``params`` with a warning).  A dict that is
    already ``{'net_g': ..., 'motion_estimator': ...}`` (plain state dicts) passes through.
    """
    out: dict[str, dict[str, Tensor]] = {}
    for n, obj in enumerate(files):
        if isinstance(obj, Mapping) and set(obj) & set(_NETS) and not set(obj) & {"params", "params_ema"}:
            for net, sd in obj.items():
                if net not in _NETS:
                    raise CheckpointError(f"SMAC converter: unknown network {net!r} (expected net_g, "
                                          f"motion_estimator, net_d)")
                if net in out:
                    raise CheckpointError(f"SMAC converter: network {net!r} given twice")
                out[net] = _strip_module(sd)
            continue
        sd = _pick(obj, use_ema, f"file {n + 1}")
        net = _identify(sd)
        if net == "unknown":
            raise CheckpointError(f"SMAC converter: file {n + 1} is not a SMAC net_g, motion estimator or "
                                  f"discriminator (first keys: {', '.join(list(sd)[:3])})")
        if net == "net_g" and use_ema and "params_ema" not in obj:
            warnings.warn("SMAC converter: net_g has no 'params_ema'; using 'params' (as BasicSR's loader does)",
                          stacklevel=2)
        if net in out:
            raise CheckpointError(f"SMAC converter: two files hold the {net}")
        out[net] = sd
    return out


#: the widths and group count the official code hard-codes, which the parity fixture patched
#: (``meta['fixture_patches']``, README §3): each default is the official value
_PATCH_DEFAULTS = {"MRFA_WIDTH_DIVISOR": 1, "GROUPNORM_GROUPS": 32, "channels_from_nf_ch_mult": False,
                   "encoder_emb_dim": 256}
#: ``net_g.channels``: the literal feature widths at 32/64/128/256 px (coarse to fine)
_OFFICIAL_CHANNELS = [256, 128, 128, 64]
#: BasicMotionEncoder / RefineFlow / to_context literal widths (divided by MRFA_WIDTH_DIVISOR in the fixture)
_MRFA_WIDTHS = (64, 96, 128, 192)
_NETWORK_TYPES = {"network_g": "AppMotionCompFormer", "network_motion_estimator": "Motion_Estimator_keypoint_aware",
                  "network_d": "VQGANDiscriminator"}


def _check_type(net: _Section, name: str) -> None:
    kind = net.get("type", _NETWORK_TYPES[name], str)
    if kind != _NETWORK_TYPES[name]:
        raise net.error("type", f"{kind!r}: the SMAC converter maps {_NETWORK_TYPES[name]} only")


def _require(net: _Section, key: str, value: Any, want: Any, why: str) -> None:
    if value != want:
        raise net.error(key, f"{value!r}: thkit's SMAC needs {want!r} ({why})")


def _allocation(split: bool, equal: bool) -> dict[str, str]:
    """The code allocation of the official ``*_codebook_split`` / ``wo_*_cdbk_share`` flags."""
    return dict(type=("equal" if equal else "progressive") if split else "shared")


def _smac_recipe(config: Any, patches: Mapping[str, Any] | None) -> dict[str, Any]:
    """:meth:`SMACConverter.recipe_from_official`."""
    whole = _Section("SMAC", config)
    nets = [k for k in whole.data if str(k).startswith("network_")]
    whole.ignore(*(k for k in whole.data if k not in nets))  # BasicSR's name, path, train, val, logger, ...
    whole.read.update(_NETWORK_TYPES)
    whole.done()  # an unknown network_* entry
    p = _Section("SMAC", patches, "patches")
    divisor = p.get("MRFA_WIDTH_DIVISOR", _PATCH_DEFAULTS["MRFA_WIDTH_DIVISOR"], int)
    groups = p.get("GROUPNORM_GROUPS", _PATCH_DEFAULTS["GROUPNORM_GROUPS"], int)
    from_nf = p.get("channels_from_nf_ch_mult", _PATCH_DEFAULTS["channels_from_nf_ch_mult"], bool)
    emb_dim = p.get("encoder_emb_dim", _PATCH_DEFAULTS["encoder_emb_dim"], int)
    if divisor < 1 or any(w % divisor for w in _MRFA_WIDTHS):
        raise p.error("MRFA_WIDTH_DIVISOR", f"{divisor}: must divide the MRFA widths {list(_MRFA_WIDTHS)}")
    p.done()
    recipe = _base_recipe("smac/vox256")
    m = recipe["model"]

    # -- motion estimator: FOMM's keypoint detector and dense motion (SyncBN = BatchNorm in eval) --------------
    me = whole.section("network_motion_estimator")
    _check_type(me, "network_motion_estimator")
    common = me.section("common_params")
    num_kp, channels = common.get("num_kp", kind=int), common.get("num_channels", kind=int)
    common.done()
    if channels != 3:
        raise common.error("num_channels", f"{channels}: net_g's autoencoder takes 3-channel images")
    kp = me.section("kp_detector_params")
    kp.ignore("model_path")  # initial weights
    m["keypoint_detector"].update(_fomm_keypoint_detector(kp, num_kp, channels,
                                                          kp.get("estimate_jacobian", False, bool)))
    kp.done()
    dm = me.section("dense_motion_params")
    dm.ignore("model_path", "occlusion_num")  # initial weights; occlusion_num counts multi_mask's maps
    occlusion = dm.get("estimate_occlusion_map", False, bool)
    _require(dm, "estimate_occlusion_map", occlusion, True, "net_g refines the occlusion map")
    _require(dm, "multi_mask", dm.get("multi_mask", False, bool), False, "one occlusion map, as the option files")
    m["motion"].update(_fomm_dense_motion(dm, num_kp, channels, occlusion))
    dm.done()
    me.done()

    # -- net_g: VQGAN autoencoder + motion / appearance codebook compensation -----------------------------------
    g = whole.section("network_g")
    _check_type(g, "network_g")
    # fix_modules: frozen in training; ae_path: initial weights; detach_motion_query: unused by the code
    g.ignore("fix_modules", "ae_path", "detach_motion_query")
    fixed = "the official code hard-codes the 32 x 32 token grid and the block indices it taps"
    _require(g, "img_size", g.get("img_size", 256, int), 256, fixed)
    _require(g, "res_blocks", g.get("res_blocks", 2, int), 2, fixed)
    _require(g, "attn_resolutions", g.get("attn_resolutions", [32], list), [32], fixed)
    _require(g, "quantizer_type", g.get("quantizer_type", "nearest", str), "nearest", "nearest-code quantisers")
    _require(g, "split", g.get("split", 1, int), 1, "the whole feature is compensated")
    _require(g, "warp_s_d_kp_query", g.get("warp_s_d_kp_query", True, bool), True, "the keypoint-aware query")
    _require(g, "MRFA_motion_enc", g.get("MRFA_motion_enc", True, bool), True, "the MRFA flow refinement")
    _require(g, "connect_list", g.get("connect_list", ["64", "128", "256"], list), ["64", "128", "256"],
             "motion compensation and fusion at every scale")
    _require(g, "connect_app_list", g.get("connect_app_list", ["32", "64", "128", "256"], list),
             ["32", "64", "128", "256"], "appearance compensation at every scale")
    if num_kp != g.get("num_kp", 15, int):
        raise g.error("num_kp", f"{g.get('num_kp', 15)} != network_motion_estimator.common_params.num_kp {num_kp}: "
                                f"net_g encodes the motion estimator's keypoint heatmaps")
    nf, ch_mult = g.get("nf", 64, int), g.get("ch_mult", [1, 2, 2, 4], list)
    if len(ch_mult) != 4:
        raise g.error("ch_mult", f"{ch_mult}: thkit's SMAC needs 4 levels ({fixed})")
    widths = [nf * c for c in ch_mult[::-1]]  # the encoder's, coarse to fine
    if not from_nf and widths != _OFFICIAL_CHANNELS:
        raise g.error("nf", f"nf {nf} x ch_mult {ch_mult} gives the widths {widths} at 32/64/128/256 px, but the "
                            f"official code hard-codes {_OFFICIAL_CHANNELS} (patch channels_from_nf_ch_mult: true "
                            f"uses nf x ch_mult)")
    if emb_dim != widths[0]:
        raise CheckpointError(f"SMAC configuration: patches.encoder_emb_dim {emb_dim} must equal the 32 px width "
                              f"nf * ch_mult[-1] = {widths[0]} (the latent is compensated as that feature)")
    dims = {}
    for part in ("motion", "app"):
        dim = g.get(f"dim_embd_{part}", 32 if part == "motion" else 256, int)
        if g.get(f"embed_dim_{part}", dim, int) != dim:
            raise g.error(f"embed_dim_{part}", f"{g.get(f'embed_dim_{part}')} != dim_embd_{part} {dim}: the "
                                               f"transformer attends to the codes, so both widths are one")
        dims[part] = dim
    heads, beta, position = g.get("n_head", 8, int), g.get("beta", 0.25, float), g.get("with_position_emb", True, bool)

    autoencoder = dict(nf=nf, ch_mult=ch_mult, norm_groups=groups)
    m["encoder"].update(autoencoder)
    m["decoder"].update(autoencoder, sft=g.get("multiscale_sft", True, bool),
                        add=g.get("multiscale_feature_fusion", True, bool))
    comp = m["compensator"]
    comp["channels"] = widths
    for part, name in (("motion", "motion"), ("app", "appearance")):
        cfg = comp[name]
        cfg["dim"] = dims[part]
        cfg["codebook"].update(num_codes=g.get(f"codebook_size_{part}", 1024, int), dim=dims[part], beta=beta)
        split = g.get(f"{name if part == 'motion' else 'app'}_codebook_split", True, bool)
        cfg["allocation"] = _allocation(split, g.get(f"wo_{part}_cdbk_share", False, bool))
        cfg["transformer"].update(num_layers=g.get(f"n_layers_{part}", 2, int), num_heads=heads,
                                  ffn_dim=2 * dims[part])
        if not position:  # thkit's default: a learned position embedding, as the official default
            cfg["transformer"]["position_embedding"] = False
    comp["motion"].update(num_kp=num_kp, norm_groups=groups, motion_width=128 // divisor,
                          feature_dims=[128 // divisor, 96 // divisor], flow_dims=[128 // divisor, 64 // divisor],
                          context_dim=192 // divisor, refine_width=128 // divisor)
    g.done()

    # -- discriminator (train.yml) -------------------------------------------------------------------------------
    d = whole.section("network_d", required=False)
    if d is None:
        recipe.pop("discriminator", None)
    else:
        _check_type(d, "network_d")
        d.ignore("model_path")  # initial weights
        recipe["discriminator"].update(in_channels=d.get("nc", 3, int), ndf=d.get("ndf", 64, int),
                                       n_layers=d.get("n_layers", 4, int))
        d.done()

    recipe["image_size"] = 256
    _set_present(recipe, num_kp=num_kp, nf=nf, ch_mult=ch_mult, norm_groups=groups, channels=widths,
                 motion_dim=dims["motion"], appearance_dim=dims["app"])
    return _plain(recipe)


@CONVERTERS.register_module(name="smac")
class SMACConverter(Converter):
    """SMAC (CVPR 2025): BasicSR files ``net_g_*.pth`` (``params`` / ``params_ema``), ``net_motion_estimator_*.pth``
    and optionally ``net_d_*.pth``, given together."""

    method = "smac"
    paper = "SMAC: motion and appearance codebook compensation for talking-head generation (CVPR 2025)"
    files = "the net_g and net_motion_estimator files (and optionally net_d), given together"

    def detect(self, checkpoint: Any) -> tuple[float, str]:
        """One BasicSR file (net_g, motion estimator or discriminator), or the combined dict of networks."""
        if isinstance(checkpoint, Mapping) and set(checkpoint) & {"params", "params_ema"}:
            sd = checkpoint.get("params_ema", checkpoint.get("params"))
            if not isinstance(sd, Mapping):
                return 0.0, "'params' is not a state dict"
            sd = _strip_module(sd)
            net = _identify(sd)
            if net == "unknown":
                return 0.0, "a BasicSR file, but not a SMAC network"
            return match_score({net: sd}, _NETS, required=(net,))
        return match_score(checkpoint, _NETS, required=_REQUIRED)

    def combine(self, files: Sequence[Any], use_ema: bool = True) -> dict[str, dict[str, Tensor]]:
        """See :func:`prepare`; ``use_ema``: take net_g's EMA weights (``params_ema``, the official default)."""
        return prepare(files, use_ema=use_ema)

    def convert(self, checkpoint: Any) -> dict[str, dict[str, Tensor]]:
        """Map ``{'net_g': sd, 'motion_estimator': sd[, 'net_d': sd]}`` to ``{'model': sd[, 'discriminator': sd]}``."""
        return convert_networks("SMAC", checkpoint, _NETS, required=_REQUIRED, source=None,
                                hint="; pass the net_g and the net_motion_estimator files together")

    def recipe_from_official(self, official_config: Mapping[str, Any],
                             patches: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The official SMAC options as a thkit recipe (plain JSON data).

        ``official_config``: BasicSR option dicts, ``{'network_g': ..., 'network_motion_estimator': ...[,
        'network_d': ...]}`` (``options/test.yml`` + ``train.yml``, or the parity fixture's ``config``); a whole
        option file's dict is accepted, its entries other than ``network_*`` (name, path, datasets, train, val,
        logger, ...) are ignored.  The recipe is ``recipes/smac/vox256.py`` with every value the options state, or
        the official constructor's default where they state none:

        * ``network_motion_estimator``: ``common_params`` (num_kp, num_channels = 3), ``kp_detector_params``
          (as FOMM's) -> ``model.keypoint_detector``; ``dense_motion_params`` (block_expansion, max_features,
          num_blocks, scale_factor, kp_variance; estimate_occlusion_map must be true, multi_mask false) ->
          ``model.motion``;
        * ``network_g``: nf, ch_mult -> encoder, decoder and the compensated widths; n_head, beta,
          ``codebook_size_*``, ``dim_embd_*`` (= ``embed_dim_*``), ``n_layers_*``, with_position_emb -> the
          motion / appearance compensation; ``motion_codebook_split`` / ``app_codebook_split`` and
          ``wo_*_cdbk_share`` -> the code allocations (progressive, equal or shared); multiscale_sft /
          multiscale_feature_fusion -> the decoder's ``sft`` / ``add``; num_kp must equal the motion estimator's;
          img_size, res_blocks, attn_resolutions, quantizer_type, split, warp_s_d_kp_query, MRFA_motion_enc,
          connect_list and connect_app_list must have the official values (the code hard-codes the token grid,
          the tapped block indices and the query / refinement path; thkit's SMAC is that code), else an error
          names the key;
        * ``network_d`` (nc, ndf, n_layers) -> ``discriminator`` (left out when there is none).

        Ignored, as they do not change the networks: ``fix_modules`` (frozen in training), ``ae_path`` and
        ``model_path`` (initial weights), ``detach_motion_query`` (unused by the official code),
        ``occlusion_num`` (used only with multi_mask).  Any other key is a :class:`~thkit.errors.CheckpointError`
        naming it.

        ``patches`` (the parity fixture's ``meta['fixture_patches']``; each default is the official value):
        ``MRFA_WIDTH_DIVISOR`` (1) divides the MRFA widths (motion_width, feature_dims, flow_dims, context_dim,
        refine_width); ``GROUPNORM_GROUPS`` (32) -> every ``norm_groups``; ``channels_from_nf_ch_mult``
        (false: the official literals 256/128/128/64, which nf x ch_mult must then give) ; ``encoder_emb_dim``
        (256) must equal nf x ch_mult[-1].  Any other entry is an error.

        ``image_size`` is 256 (the only size the official code runs at); the retrieval transformers' token grid
        follows it (``num_tokens`` is left to the part).  ``align_corners`` needs no option: the official code
        was trained on a torch whose default is ``False`` (the dense motion's deformed source) and passes
        ``True`` everywhere else, as the recipe has it.
        """
        return _smac_recipe(official_config, patches)

"""Official MRFA checkpoints to thkit (JialeTao/MRFA, "Learning Motion Refinement for Unsupervised Face Animation").

``train.py`` saves ``{'model': DataParallel(MRFA).state_dict(), 'optimizer', 'epoch'}``: every key is prefixed
``module.`` and the whole ``MRFA`` module is in it, the VGG-19 of the perceptual loss included.  The official
sub-modules map onto the :class:`~thkit.models.talking_head.TalkingHeadModel` of ``recipes/mrfa/*`` by prefix
(thkit keeps the official module names below each prefix):

====================================================================  ============================================
official (after ``module.``)                                          thkit ``model``
====================================================================  ============================================
``encoder.{pre_feature,transformer}.*`` (prior mtia: TokenPose-B)     ``keypoint_detector.*``
``encoder.{down,predictor,kp,jacobian}.*`` (prior fomm: KPDetector)   ``keypoint_detector.*``
``encoder.fg_encoder.*`` (prior tpsm: ResNet-18)                      ``keypoint_detector.backbone.*``
``dense_motion.*`` (FOMM / TPSMM dense motion)                        ``motion.*``
``decoder.generator.{first,down_blocks}.*``                           ``encoder.*``
``decoder.generator.{up_blocks,resblock,channel_block,final}.*``      ``decoder.*``
``decoder.{kp,kp_img,kp_head,kp_img_head,pos_embedding}``, ``down``   ``compensator.structure.*``
``decoder.{corr_enc,refine,to_context}.*``                            ``compensator.updater.*``
====================================================================  ============================================

``vgg.*`` (VGG-19, loss only) and ``pyramid.*`` (the loss pyramid's kernels; ``pyramid.downs.1.weight`` is all NaN)
are skipped and reported in one warning.  Any other key is a :class:`~thkit.errors.CheckpointError` naming it; a
missing network is one too.

The prior motion model (``train_params.prior_model``) is read from the keys of ``encoder.*`` (:func:`prior_model`),
and a checkpoint without the refinement modules (``decoder.{kp,kp_img,...,corr_enc,refine,to_context}``) is a
``raft_flow.prior_only`` one; :meth:`MRFAConverter.checkpoint_recipe` names the recipe that fits
(:data:`RECIPES`).  A prior-only checkpoint's ``decoder.generator.channel_block.*`` (built but never called when
``prior_only``) and ``down.weight`` (the fixed kernel feeding the absent structure encoder) are skipped and
reported too.  Besides the file, the converter takes the networks as a dict
``{'encoder': sd, 'dense_motion': sd, 'decoder': sd, 'down': sd[, 'vgg', 'pyramid']}`` (the parity fixture's form).
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from thkit.convert.base import Converter
from thkit.convert.fomm import _base_recipe, _image_size, _plain, _Section, _set_present
from thkit.errors import CheckpointError
from thkit.registry import CONVERTERS

Tensor = torch.Tensor

#: (official key regex, thkit template) -- first match wins
_RULES = [
    (r"encoder\.(?P<rest>(?:pre_feature|transformer)\..+)", "keypoint_detector.{rest}"),
    (r"encoder\.(?P<rest>(?:down|predictor|kp|jacobian)\..+)", "keypoint_detector.{rest}"),
    (r"encoder\.fg_encoder\.(?P<rest>.+)", "keypoint_detector.backbone.{rest}"),
    (r"dense_motion\.(?P<rest>(?:hourglass|mask|maps|occlusion|down)\..+)", "motion.{rest}"),
    (r"decoder\.generator\.(?P<rest>(?:first|down_blocks)\..+)", "encoder.{rest}"),
    (r"decoder\.generator\.(?P<rest>(?:up_blocks|resblock|channel_block|final)\..+)", "decoder.{rest}"),
    (r"decoder\.(?P<rest>(?:kp|kp_img|kp_head|kp_img_head)\..+|pos_embedding)", "compensator.structure.{rest}"),
    (r"down\.(?P<rest>weight)", "compensator.structure.down.{rest}"),
    (r"decoder\.(?P<rest>(?:corr_enc|refine|to_context)\..+)", "compensator.updater.{rest}"),
]
_SKIPPED = ("vgg.", "pyramid.")
_REQUIRED = ("encoder.", "dense_motion.", "decoder.generator.", "down.")
#: RaftFlow's refinement modules: all present, or none (``raft_flow.prior_only``)
_REFINEMENT = ("decoder.kp.", "decoder.kp_img.", "decoder.kp_head.", "decoder.kp_img_head.", "decoder.pos_embedding",
               "decoder.corr_enc.", "decoder.refine.", "decoder.to_context.")
#: built by the official code but unused when ``prior_only`` (skipped, with a warning)
_PRIOR_ONLY_UNUSED = ("decoder.generator.channel_block.", "down.")
#: ``train_params.prior_model`` -> the official encoder's module names that tell it
_PRIOR_KEYS = {"mtia": ("encoder.pre_feature.", "encoder.transformer."), "fomm": ("encoder.predictor.",),
               "tpsm": ("encoder.fg_encoder.",)}
#: (prior_model, prior_only) -> (the recipe that holds these networks, recipe settings that tell it)
_PRIOR_ONLY_OPTIONS = "--cfg-options model.compensator.prior_only=True model.decoder.fuse_prior=False"
RECIPES = {
    ("mtia", False): "mrfa/vox256", ("fomm", False): "mrfa/vox256_fomm_prior",
    ("tpsm", False): "mrfa/vox256_tps_prior", ("mtia", True): "mrfa/vox256_prior_only",
    ("fomm", True): f"mrfa/vox256_fomm_prior {_PRIOR_ONLY_OPTIONS}",
    ("tpsm", True): f"mrfa/vox256_tps_prior {_PRIOR_ONLY_OPTIONS}",
}
_PARTS = {"mtia": ("TokenPoseKeypointDetector", "FirstOrderMotion"),
          "fomm": ("FOMMKeypointDetector", "FirstOrderMotion"),
          "tpsm": ("TPSKeypointDetector", "ThinPlateSplineMotion")}
_IGNORED_TOP = ("optimizer", "epoch")
_NETS = ("encoder", "dense_motion", "decoder", "down", "vgg", "pyramid")


def _flat(checkpoint: Any) -> dict[str, Tensor] | None:
    """The official ``MRFA.state_dict()`` with plain keys, or None if ``checkpoint`` has neither form."""
    if not isinstance(checkpoint, Mapping):
        return None
    if isinstance(checkpoint.get("model"), Mapping):
        sd = checkpoint["model"]
        return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    if isinstance(checkpoint.get("encoder"), Mapping) and isinstance(checkpoint.get("decoder"), Mapping):
        return {f"{net}.{k}": v for net, sd in checkpoint.items() if isinstance(sd, Mapping) for k, v in sd.items()}
    return None


def prior_model(state_dict: Mapping[str, Any]) -> str | None:
    """The official ``train_params.prior_model`` (``'mtia'``, ``'fomm'`` or ``'tpsm'``) whose keypoint detector a flat
    MRFA state dict holds, from the ``encoder.*`` module names; None when none (or several) fit."""
    found = [p for p, marks in _PRIOR_KEYS.items() if any(k.startswith(marks) for k in state_dict)]
    return found[0] if len(found) == 1 else None


def _is_prior_only(state_dict: Mapping[str, Any]) -> bool:
    """True for a ``raft_flow.prior_only`` checkpoint (no refinement module); a CheckpointError for a partial one."""
    have = [p for p in _REFINEMENT if any(k.startswith(p) for k in state_dict)]
    if have and len(have) != len(_REFINEMENT):
        missing = [p.rstrip(".") + ("*" if p.endswith(".") else "") for p in _REFINEMENT if p not in have]
        raise CheckpointError(f"MRFA converter: the checkpoint has part of RaftFlow's refinement modules; missing "
                              f"{', '.join(missing)}")
    return not have


def _target(key: str) -> str | None:
    for pattern, template in _RULES:
        m = re.fullmatch(pattern, key)
        if m:
            return template.format(**m.groupdict())
    return None


@CONVERTERS.register_module(name="mrfa")
class MRFAConverter(Converter):
    """MRFA (Tao et al., NeurIPS 2023): ``{'model': {'module.encoder.*', 'module.dense_motion.*', 'module.decoder.*',
    'module.down.weight', 'module.vgg.*', 'module.pyramid.*'}, 'optimizer', 'epoch'}``."""

    method = "mrfa"
    paper = "Learning Motion Refinement for Unsupervised Face Animation (NeurIPS 2023)"
    files = "one official checkpoint file ({'model': DataParallel state_dict})"

    def detect(self, checkpoint: Any) -> tuple[float, str]:
        sd = _flat(checkpoint)
        if sd is None:
            return 0.0, "no 'model' state dict (nor encoder / decoder networks)"
        absent = [p for p in _REQUIRED if not any(k.startswith(p) for k in sd)]
        if absent:
            return 0.0, f"no {', '.join(p + '*' for p in absent)}"
        bad = [k for k in sd if not k.startswith(_SKIPPED) and _target(k) is None]
        why = "every key has a rule" if not bad else f"{len(bad)} of {len(sd)} keys have no rule (e.g. " \
                                                    f"{', '.join(bad[:3])})"
        prior = prior_model(sd)
        if prior is None:
            return 0.0, "the encoder is none of the prior models mtia, fomm, tpsm"
        return (len(sd) - len(bad)) / len(sd), f"{why} (prior_model {prior})"

    def _variant(self, checkpoint: Any) -> tuple[str, bool]:
        sd = _flat(checkpoint)
        prior = None if sd is None else prior_model(sd)
        if prior is None:
            raise CheckpointError("MRFA converter: the checkpoint's encoder.* is none of the prior models' keypoint "
                                  "detectors (mtia: encoder.pre_feature.*, fomm: encoder.predictor.*, tpsm: "
                                  "encoder.fg_encoder.*)")
        return prior, _is_prior_only(sd)

    def checkpoint_settings(self, checkpoint: Any) -> dict[str, Any]:
        """The parts a checkpoint's prior model needs and whether it refines (``model.compensator.prior_only``)."""
        prior, only = self._variant(checkpoint)
        kp, motion = _PARTS[prior]
        return {"model.keypoint_detector.type": kp, "model.motion.type": motion, "model.compensator.prior_only": only}

    def checkpoint_recipe(self, checkpoint: Any) -> str | None:
        """The recipe whose networks the checkpoint holds (:data:`RECIPES`: by prior model and ``prior_only``)."""
        return RECIPES[self._variant(checkpoint)]

    def convert(self, checkpoint: Any) -> dict[str, dict[str, Tensor]]:
        """``{'model': thkit state dict}``; warns once about the skipped loss-only tensors."""
        sd = _flat(checkpoint)
        if sd is None:
            got = ", ".join(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
            raise CheckpointError(f"MRFA converter: expected an official checkpoint {{'model': state_dict}} (or the "
                                  f"networks {', '.join(_NETS)}), got {got}")
        if "model" in checkpoint:
            extra = [str(k) for k in checkpoint if k not in ("model", *_IGNORED_TOP)]
        else:
            extra = [str(k) for k in checkpoint if k not in _NETS]
        if extra:
            raise CheckpointError(f"MRFA converter: unknown entries in the official checkpoint: {', '.join(extra)}")
        absent = [p + "*" for p in _REQUIRED if not any(k.startswith(p) for k in sd)]
        if absent:
            raise CheckpointError(f"MRFA converter: missing networks in the official checkpoint: {', '.join(absent)}")
        _, only = self._variant(checkpoint)
        out, skipped, unknown, unused = {}, [], [], []
        for key, value in sd.items():
            if key.startswith(_SKIPPED):
                skipped.append(key)
                continue
            if only and key.startswith(_PRIOR_ONLY_UNUSED):
                unused.append(key)
                continue
            target = _target(key)
            if target is None:
                unknown.append(key)
            else:
                out[target] = value
        if unknown:
            raise CheckpointError(f"MRFA converter: {len(unknown)} official keys have no rule: "
                                  f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
        if skipped:
            vgg = sum(k.startswith("vgg.") for k in skipped)
            warnings.warn(f"MRFA converter: skipped {len(skipped)} loss-only tensors ({vgg} of the perceptual loss's "
                          f"VGG-19 vgg.*, {len(skipped) - vgg} of its image pyramid pyramid.*); thkit's perceptual "
                          f"loss loads its own VGG-19", stacklevel=2)
        if unused:
            warnings.warn(f"MRFA converter: skipped {len(unused)} tensors that the prior-only model (raft_flow."
                          f"prior_only) builds but never uses (decoder.generator.channel_block.*, down.weight)",
                          stacklevel=2)
        return {"model": out}

    def recipe_from_official(self, official_config: Mapping[str, Any], patches: Mapping[str, Any] | None = None,
                             *, image_size: int | None = None) -> dict[str, Any]:
        """The official MRFA configuration (``config/vox1.yaml``'s dict) as a thkit recipe (plain JSON data).

        ``train_params.prior_model`` picks the base recipe (:data:`RECIPES`) and the sections read for the prior:
        ``mtia`` -> ``mtia_kp_detector.MODEL`` (NUM_JOINTS, DIM, TRANSFORMER_DEPTH / HEADS / MLP_RATIO, PATCH_SIZE,
        IMAGE_SIZE, ESTIMATE_JACOBIAN, EXTRA.STAGE2 / STAGE3) and ``dense_motion``; ``fomm`` -> ``fomm_kp_detector``
        and ``dense_motion``; ``tpsm`` -> ``tpsm_kp_detector`` and ``tpsm_dense_motion`` (``multi_mask`` False; the
        keypoints are averaged per 5-point group, so ``raft_flow.num_kp`` must be ``num_tps``).  ``raft_flow``
        (prior_only, num_kp, dim, size, generator, driving_encoder, source_encoder) -> encoder, compensator and
        decoder; ``prior_only: True`` gives the compensator ``prior_only`` and a decoder without prior fusion.  The
        other priors' sections and the data / training sections do not change the networks and are not read.
        ``patches`` (the parity fixture's ``meta['fixture_patches']``): ``HRNET_STEM_WIDTH`` (64),
        ``MRFA_WIDTH_DIVISOR`` (1; divides the flow updater's literal widths), ``RAFT_CONTEXT_IN_CHANNELS`` (must
        equal the generator encoder's widths, coarse to fine: thkit derives them).  ``image_size``: default
        ``raft_flow.size``.
        """
        return _mrfa_recipe(official_config, patches, image_size)


def _mrfa_recipe(config: Any, patches: Mapping[str, Any] | None, image_size: int | None) -> dict[str, Any]:
    whole = _Section("MRFA", config)
    p = _Section("MRFA", patches, "patches")
    stem = p.get("HRNET_STEM_WIDTH", 64, int)
    div = p.get("MRFA_WIDTH_DIVISOR", 1, int)
    ctx_in = p.get("RAFT_CONTEXT_IN_CHANNELS", None, list)
    p.done()
    prior = "mtia"
    train = whole.section("train_params", required=False)
    if train is not None:
        prior = train.get("prior_model", "mtia", str)
        if prior not in _PRIOR_KEYS:
            raise train.error("prior_model", f"{prior!r}: the official code knows mtia, fomm and tpsm")
        train.ignore(*[k for k in train.data if k != "prior_model"])
        train.done()
    sections = {"mtia": ("mtia_kp_detector", "dense_motion"), "fomm": ("fomm_kp_detector", "dense_motion"),
                "tpsm": ("tpsm_kp_detector", "tpsm_dense_motion")}[prior]
    # the other priors' sections, data, training and logging settings do not change these networks
    whole.ignore(*[k for k in whole.data if k not in (*sections, "raft_flow", "train_params")])
    raft = whole.section("raft_flow")
    prior_only = raft.get("prior_only", False, bool)
    recipe = _base_recipe(RECIPES[(prior, False)])
    m = recipe["model"]
    kp_size = None
    if prior == "mtia":
        num_kp, kp_size = _mtia_detector(whole.section("mtia_kp_detector"), m, stem)
    elif prior == "fomm":
        kp = whole.section("fomm_kp_detector")
        if kp.get("estimate_occlusion", False, bool):
            raise kp.error("estimate_occlusion", "True: thkit's FOMM keypoint detector has no keypoint-occlusion head "
                                                 "(vox1.yaml: False)")
        num_kp = kp.get("num_kp", 15, int)
        m["keypoint_detector"].update(
            num_kp=num_kp, in_channels=kp.get("num_channels", 3, int),
            block_expansion=kp.get("block_expansion", 32, int),
            max_features=kp.get("max_features", 1024, int), num_blocks=kp.get("num_blocks", 5, int),
            temperature=kp.get("temperature", 0.1, float), scale_factor=kp.get("scale_factor", 0.25, float),
            estimate_jacobian=kp.get("estimate_jacobian", False, bool))
        kp.done()
    else:
        kp = whole.section("tpsm_kp_detector")
        num_tps = kp.get("num_tps", kind=int)
        kp.done()
        m["keypoint_detector"].update(num_tps=num_tps)
        num_kp = num_tps
    if prior == "tpsm":
        dm = whole.section("tpsm_dense_motion")
        if dm.get("multi_mask", False, bool):
            raise dm.error("multi_mask", "True: MRFA's TPS prior has one occlusion (the official multi-mask branch "
                                         "does not run)")
        if dm.get("num_tps", kind=int) != num_tps:
            raise dm.error("num_tps", f"{dm.data['num_tps']} differs from tpsm_kp_detector.num_tps {num_tps}")
        dm.ignore("bg")  # stored, never read by TPSDenseMotionNetwork
        m["motion"].update(num_tps=num_tps, num_channels=dm.get("num_channels", kind=int),
                           block_expansion=dm.get("block_expansion", kind=int),
                           max_features=dm.get("max_features", kind=int), num_blocks=dm.get("num_blocks", kind=int),
                           scale_factor=dm.get("scale_factor", 0.25, float),
                           kp_variance=dm.get("kp_variance", 0.01, float))
    else:
        dm = whole.section("dense_motion")
        if dm.get("num_kp", kind=int) != num_kp:
            raise dm.error("num_kp", f"{dm.data['num_kp']} differs from the keypoint detector's {num_kp}")
        m["motion"].update(num_kp=num_kp, in_channels=dm.get("num_channels", kind=int),
                           block_expansion=dm.get("block_expansion", kind=int),
                           max_features=dm.get("max_features", kind=int),
                           num_blocks=dm.get("num_blocks", kind=int), scale_factor=dm.get("scale_factor", kind=float),
                           estimate_occlusion_map=dm.get("estimate_occlusion_map", True, bool))
    dm.done()

    size = raft.get("size", kind=int)
    gen = raft.section("generator")
    widths = dict(block_expansion=gen.get("block_expansion", kind=int), max_features=gen.get("max_features", kind=int))
    n_up = gen.get("num_up_blocks", kind=int)
    gen.get("num_channels", 3, int)
    gen.done()
    m["encoder"].update(num_down_blocks=n_up, **widths)
    m["decoder"].update(num_up_blocks=n_up, **widths)
    channels = [min(widths["max_features"], widths["block_expansion"] * 2**i) for i in reversed(range(n_up + 1))]
    if ctx_in is not None and [int(c) for c in ctx_in] != channels:
        raise CheckpointError(f"MRFA patches: RAFT_CONTEXT_IN_CHANNELS {ctx_in} differ from the generator encoder's "
                              f"widths {channels} (coarse to fine), which thkit's flow updater takes")
    encs = {}
    for name in ("driving_encoder", "source_encoder"):
        e = raft.section(name)
        encs[name] = dict(block_expansion=e.get("block_expansion", kind=int),
                          max_features=e.get("max_features", kind=int), num_blocks=e.get("num_blocks", kind=int))
        e.get("in_features", kind=int)
        e.done()
    comp = m["compensator"]
    comp["channels"] = channels
    raft_kp, dim = raft.get("num_kp", kind=int), raft.get("dim", kind=int)
    if prior_only:  # RaftFlow builds none of the refinement modules: the encoders' and num_kp/dim are unused
        comp.update(prior_only=True, structure=None, updater=None)
        m["decoder"]["fuse_prior"] = False
    else:
        if raft_kp != num_kp:
            what = "tpsm_kp_detector.num_tps (5-point groups averaged)" if prior == "tpsm" else "the keypoint count"
            raise raft.error("num_kp", f"{raft_kp} differs from {what} {num_kp}")
        comp["structure"].update(num_kp=raft_kp, dim=dim, **encs)
        comp["updater"].update(motion_width=128 // div, feature_dims=[128 // div, 96 // div],
                               flow_dims=[128 // div, 64 // div], context_dim=192 // div, refine_width=128 // div)
    raft.done()
    whole.done()
    if image_size is None:
        image_size = size
    if image_size != size or (kp_size is not None and int(kp_size[0]) != size):
        raise CheckpointError(f"MRFA configuration: raft_flow.size {size}, mtia IMAGE_SIZE {kp_size} and image_size "
                              f"{image_size} must agree (the official code runs at that size only)")
    recipe["image_size"] = _image_size("MRFA", image_size, None, recipe["image_size"])
    _set_present(recipe, num_kp=num_kp, num_tps=num_kp)
    return _plain(recipe)


def _mtia_detector(kp: _Section, m: dict[str, Any], stem: int) -> tuple[int, list]:
    """``mtia_kp_detector.MODEL`` -> ``model.keypoint_detector`` (TokenPose); returns (NUM_JOINTS, IMAGE_SIZE)."""
    model = kp.section("MODEL")
    num_kp = model.get("NUM_JOINTS", kind=int)
    dim = model.get("DIM", kind=int)
    patch = model.get("PATCH_SIZE", kind=list)
    size_kp = model.get("IMAGE_SIZE", kind=list)
    if model.get("POS_EMBEDDING_TYPE", "sine-full", str) != "sine-full" or model.get("DATA_PREPROCESS", False, bool):
        raise model.error("POS_EMBEDDING_TYPE", "thkit's TokenPose detector has the sine-full embedding and no "
                                                "ImageNet preprocessing (as every official config)")
    extra = model.section("EXTRA")
    stages = {}
    for name in ("STAGE2", "STAGE3"):
        st = extra.section(name)
        stages[name.lower()] = dict(num_modules=st.get("NUM_MODULES", kind=int), block=st.get("BLOCK", kind=str),
                                    num_blocks=st.get("NUM_BLOCKS", kind=list),
                                    num_channels=st.get("NUM_CHANNELS", kind=list))
        st.ignore("NUM_BRANCHES", "FUSE_METHOD")
        st.done()
    extra.ignore("PRETRAINED_LAYERS", "FINAL_CONV_KERNEL")
    extra.done()
    m["keypoint_detector"].update(num_kp=num_kp, dim=dim, depth=model.get("TRANSFORMER_DEPTH", kind=int),
                                  heads=model.get("TRANSFORMER_HEADS", kind=int),
                                  mlp_ratio=model.get("TRANSFORMER_MLP_RATIO", kind=int), patch_size=int(patch[0]),
                                  stem_width=stem, estimate_jacobian=model.get("ESTIMATE_JACOBIAN", True, bool),
                                  **stages)
    if model.get("FIX_IMG2MOTION_ATTENTION", False, bool):
        raise model.error("FIX_IMG2MOTION_ATTENTION", "True: thkit's TokenPose detector has no attention mask")
    if model.get("BASE_CHANNEL", kind=int) != stages["stage3"]["num_channels"][0]:
        raise model.error("BASE_CHANNEL", "must equal EXTRA.STAGE3.NUM_CHANNELS[0] (the HRNet output width)")
    # heatmap-head, multi-branch and initialisation settings: unused with MRFA's token heads and random init
    model.ignore("NAME", "PRETRAINED", "INIT_WEIGHTS", "INIT", "HEATMAP_SIZE", "TAG_PER_JOINT", "HIDDEN_HEATMAP_DIM",
                 "MULTI_TRANSFORMER_DEPTH", "MULTI_TRANSFORMER_HEADS", "MULTI_DIM", "NUM_BRANCHES", "TEMPERATURE",
                 "TARGET_TYPE", "SIGMA")
    model.done()
    kp.done()
    return num_kp, size_kp

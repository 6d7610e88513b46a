"""Official MRFA checkpoints to thkit (JialeTao/MRFA, "Learning Motion Refinement for Unsupervised Face Animation").

``train.py`` saves ``{'model': DataParallel(MRFA).state_dict(), 'optimizer', 'epoch'}``: every key is prefixed
``module.`` and the whole ``MRFA`` module is in it, the VGG-19 of the perceptual loss included.  The official
sub-modules map onto the :class:`~thkit.models.talking_head.TalkingHeadModel` of ``recipes/mrfa/*`` by prefix
(thkit keeps the official module names below each prefix):

====================================================================  ============================================
official (after ``module.``)                                          thkit ``model``
====================================================================  ============================================
``encoder.*`` (MTIA / TokenPose-B)                                    ``keypoint_detector.*``
``dense_motion.*`` (FOMM dense motion)                                ``motion.*``
``decoder.generator.{first,down_blocks}.*``                           ``encoder.*``
``decoder.generator.{up_blocks,resblock,channel_block,final}.*``      ``decoder.*``
``decoder.{kp,kp_img,kp_head,kp_img_head,pos_embedding}``, ``down``   ``compensator.structure.*``
``decoder.{corr_enc,refine,to_context}.*``                            ``compensator.updater.*``
====================================================================  ============================================

``vgg.*`` (VGG-19, loss only) and ``pyramid.*`` (the loss pyramid's kernels; ``pyramid.downs.1.weight`` is all NaN)
are skipped and reported in one warning.  Any other key is a :class:`~thkit.errors.CheckpointError` naming it; a
missing network is one too.  Besides the file, the converter takes the networks as a dict
``{'encoder': sd, 'dense_motion': sd, 'decoder': sd, 'down': sd[, 'vgg', 'pyramid']}`` (the parity fixture's form).
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from thkit.convert.base import Converter
from thkit.convert.fomm import _base_recipe, _image_size, _plain, _Section
from thkit.errors import CheckpointError
from thkit.registry import CONVERTERS

Tensor = torch.Tensor

#: (official key regex, thkit template) -- first match wins
_RULES = [
    (r"encoder\.(?P<rest>(?:pre_feature|transformer)\..+)", "keypoint_detector.{rest}"),
    (r"dense_motion\.(?P<rest>(?:hourglass|mask|occlusion|down)\..+)", "motion.{rest}"),
    (r"decoder\.generator\.(?P<rest>(?:first|down_blocks)\..+)", "encoder.{rest}"),
    (r"decoder\.generator\.(?P<rest>(?:up_blocks|resblock|channel_block|final)\..+)", "decoder.{rest}"),
    (r"decoder\.(?P<rest>(?:kp|kp_img|kp_head|kp_img_head)\..+|pos_embedding)", "compensator.structure.{rest}"),
    (r"down\.(?P<rest>weight)", "compensator.structure.down.{rest}"),
    (r"decoder\.(?P<rest>(?:corr_enc|refine|to_context)\..+)", "compensator.updater.{rest}"),
]
_SKIPPED = ("vgg.", "pyramid.")
_REQUIRED = ("encoder.", "dense_motion.", "decoder.generator.", "decoder.corr_enc.", "down.")
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
        return (len(sd) - len(bad)) / len(sd), why

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
        out, skipped, unknown = {}, [], []
        for key, value in sd.items():
            if key.startswith(_SKIPPED):
                skipped.append(key)
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
        return {"model": out}

    def recipe_from_official(self, official_config: Mapping[str, Any], patches: Mapping[str, Any] | None = None,
                             *, image_size: int | None = None) -> dict[str, Any]:
        """The official MRFA configuration (``config/vox1.yaml``'s dict) as a thkit recipe (plain JSON data).

        Read: ``mtia_kp_detector.MODEL`` (NUM_JOINTS, DIM, TRANSFORMER_DEPTH / HEADS / MLP_RATIO, PATCH_SIZE,
        IMAGE_SIZE, ESTIMATE_JACOBIAN, EXTRA.STAGE2 / STAGE3) -> ``model.keypoint_detector``; ``dense_motion`` ->
        ``model.motion``; ``raft_flow`` (num_kp, dim, size, generator, driving_encoder, source_encoder) -> encoder,
        compensator and decoder; ``train_params.prior_model`` must be ``mtia`` (the ``fomm`` / ``tpsm`` priors are
        other recipes) and ``raft_flow.prior_only`` False.  Other sections do not change the networks and are not
        read.  ``patches`` (the parity fixture's ``meta['fixture_patches']``): ``HRNET_STEM_WIDTH`` (64),
        ``MRFA_WIDTH_DIVISOR`` (1; divides the flow updater's literal widths), ``RAFT_CONTEXT_IN_CHANNELS`` (must
        equal the generator encoder's widths, coarse to fine: thkit derives them).  ``image_size``: default
        ``raft_flow.size``.
        """
        return _mrfa_recipe(official_config, patches, image_size)


def _mrfa_recipe(config: Any, patches: Mapping[str, Any] | None, image_size: int | None) -> dict[str, Any]:
    whole = _Section("MRFA", config)
    whole.ignore(*[k for k in whole.data if k not in ("mtia_kp_detector", "dense_motion", "raft_flow", "train_params")])
    p = _Section("MRFA", patches, "patches")
    stem = p.get("HRNET_STEM_WIDTH", 64, int)
    div = p.get("MRFA_WIDTH_DIVISOR", 1, int)
    ctx_in = p.get("RAFT_CONTEXT_IN_CHANNELS", None, list)
    p.done()
    train = whole.section("train_params", required=False)
    if train is not None:
        prior = train.get("prior_model", "mtia", str)
        if prior != "mtia":
            raise train.error("prior_model", f"{prior!r}: only the default MTIA prior maps onto recipes/mrfa/vox256")
        train.ignore(*[k for k in train.data if k != "prior_model"])
        train.done()
    recipe = _base_recipe("mrfa/vox256")
    m = recipe["model"]

    model = whole.section("mtia_kp_detector").section("MODEL")
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

    dm = whole.section("dense_motion")
    m["motion"].update(num_kp=dm.get("num_kp", kind=int), in_channels=dm.get("num_channels", kind=int),
                       block_expansion=dm.get("block_expansion", kind=int),
                       max_features=dm.get("max_features", kind=int),
                       num_blocks=dm.get("num_blocks", kind=int), scale_factor=dm.get("scale_factor", kind=float),
                       estimate_occlusion_map=dm.get("estimate_occlusion_map", True, bool))
    dm.done()

    raft = whole.section("raft_flow")
    if raft.get("prior_only", False, bool):
        raise raft.error("prior_only", "True: the prior-only MRFA variant has no thkit recipe")
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
    comp["structure"].update(num_kp=raft.get("num_kp", kind=int), dim=raft.get("dim", kind=int), **encs)
    comp["updater"].update(motion_width=128 // div, feature_dims=[128 // div, 96 // div],
                           flow_dims=[128 // div, 64 // div], context_dim=192 // div, refine_width=128 // div)
    raft.done()
    whole.done()
    if image_size is None:
        image_size = size
    if image_size != size or int(size_kp[0]) != size:
        raise CheckpointError(f"MRFA configuration: raft_flow.size {size}, mtia IMAGE_SIZE {size_kp} and image_size "
                              f"{image_size} must agree (the official code runs at that size only)")
    recipe["image_size"] = _image_size("MRFA", image_size, None, recipe["image_size"])
    recipe["num_kp"] = num_kp
    return _plain(recipe)

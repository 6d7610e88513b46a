"""The Python front door: build any model by name, list them, convert official weights, animate.

Like timm's ``create_model``, one call gives a ready model::

    import thkit

    thkit.list_models("smac/*")                       # recipe names, built-in and plugins'
    model = thkit.create_model("fomm/vox256", checkpoint="vox-cpk.pth.tar")   # official file, detected
    model = thkit.create_model("fomm_vox/")            # a model folder: recipe, size and weights inside
    frames = thkit.animate("face.png", "driving.mp4", model)                  # (T, H, W, 3) uint8
    thkit.animate("face.png", "driving.mp4", model, out="result.mp4")        # a video file

Every command of the CLI and every benchmark goes through :func:`create_model`: recipe (or model folder) ->
plugins -> build -> weights exists only here.
"""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.errors import CheckpointError, RecipeError
from thkit.recipe import recipe_index, recipe_summary

__all__ = ["animate", "build_parts", "convert_checkpoint", "create_model", "list_models", "load_recipe", "model_info"]


def list_models(pattern: str | None = None, *, with_summary: bool = False) -> list[str] | list[tuple[str, str]]:
    """Recipe names (``fomm/vox256``), built-in and plugins', optionally filtered by a glob ``pattern``
    (``'smac/*'``); ``with_summary=True`` pairs each with the recipe's first comment line."""
    index = recipe_index()
    names = sorted(n for n in index if pattern is None or fnmatch.fnmatch(n, pattern))
    if with_summary:
        return [(n, recipe_summary(index[n][0])) for n in names]
    return names


def load_recipe(name_or_path: str | os.PathLike, cfg_options: Mapping[str, Any] | None = None,
                size: int | None = None):
    """The resolved recipe (an mmengine ``Config``) of a recipe name, a recipe file or a model folder.

    ``size``: the recipe at another image size (parts that depend on it follow); ``cfg_options``: overrides
    (``{'model.motion.num_kp': 15}``).  A model folder's ``recipe.json`` is read as data, never executed.
    """
    return _resolve(name_or_path, size, cfg_options)[0]


def _resolve(name_or_path: str | os.PathLike, size: int | None, cfg_options: Mapping[str, Any] | None):
    """``(recipe Config, folder meta)``: a model folder's recipe (meta non-empty) or a recipe name/file's."""
    from thkit.model_folder import is_model_folder, read_recipe
    from thkit.recipe import load_recipe as _load

    if not is_model_folder(name_or_path):
        return _load(name_or_path, dict(cfg_options) if cfg_options else None, size=size), {}
    cfg, meta = read_recipe(name_or_path)
    if size is not None:
        cfg.merge_from_dict({"image_size": int(size)})
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    return cfg, meta


def build_parts(cfg, names: tuple[str, ...] = ()) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """Build ``cfg.model`` and the training networks named in ``names`` that the recipe defines (e.g.
    ``('discriminator',)``), after loading plugins.  Returns ``(model, {name: network})``."""
    from thkit.builder import build, build_model
    from thkit.plugins import load_plugins

    load_plugins()
    model = build_model(cfg.model, image_size=cfg.get("image_size"))
    extra = {}
    for name in names:
        if cfg.get(name):
            extra[name] = build(name, cfg[name], path=name)
    return model, extra


def create_model(name_or_path: str | os.PathLike, *, size: int | None = None,
                 checkpoint: str | os.PathLike | None = None, cfg_options: Mapping[str, Any] | None = None,
                 device: str | torch.device | None = None, checkpoint_format: str = "auto", trusted: bool = False,
                 extra: tuple[str, ...] = (), precision: str | None = None) -> torch.nn.Module:
    """A model from a recipe name (``'smac/vox256'``), a recipe file, or a model folder, in eval mode.

    Args:
        name_or_path: recipe name, recipe ``.py`` file, or model folder (recipe, size and weights inside).
        size: image size (default: the recipe's or the folder's).
        checkpoint: weights: a model folder, a thkit checkpoint, or an official checkpoint (its method is
            detected by the registered converters; ``checkpoint_format`` names it instead).  Without it a
            recipe's model has random weights (as timm's ``pretrained=False``); a folder's own weights load.
        cfg_options: recipe overrides, ``{'model.motion.num_kp': 15}``.
        device: where to put the model (default: CPU).
        trusted: allow unpickling a legacy checkpoint that holds Python objects.
        extra: training networks to build and load too (``('discriminator',)``): then ``model.extra`` holds them.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'``: the autocast :func:`animate` uses with this model
            (``model.meta['precision']``; checked against ``device``: bf16 on the CPU, fp16 on CUDA).

    The model carries ``model.recipe`` (the resolved Config) and ``model.meta`` (``image_size``,
    ``input_range``, ``weights``: where its weights came from or ``None``).
    """
    from thkit.checkpoint import load_into

    cfg, folder_meta = _resolve(name_or_path, size, cfg_options)
    weights = checkpoint if checkpoint is not None or not folder_meta else name_or_path
    if weights is not None and not Path(weights).exists():
        raise CheckpointError(f"checkpoint {weights} does not exist")
    try:
        model, nets = build_parts(cfg, extra)
    except RecipeError as e:
        if not folder_meta:
            raise
        from thkit.model_folder import RECIPE

        raise RecipeError("", f"{Path(name_or_path) / RECIPE}: {e}") from e
    if weights is not None:
        try:
            load_into(model, weights, fmt=checkpoint_format, trusted=trusted, extra=nets)
        except CheckpointError as e:
            what, fix = _describe_mismatch(weights, cfg, checkpoint_format, trusted)
            raise CheckpointError(f"checkpoint {weights}{what} does not fit recipe {name_or_path}: {fix or e}") from e
    model.recipe = cfg
    model.meta = {"image_size": int(cfg.get("image_size", 256)),
                  "input_range": tuple(float(v) for v in getattr(model, "input_range", (0.0, 1.0))),
                  "weights": None if weights is None else str(weights), **{k: v for k, v in folder_meta.items()
                                                                            if k not in ("image_size", "input_range")}}
    if precision is not None:
        from thkit.inference.stream import resolve_precision

        resolve_precision(precision, device or "cpu")
        model.meta["precision"] = str(precision).strip().lower()
    if nets:
        model.extra = nets
    model = model.eval()
    return model.to(device) if device is not None else model


def _describe_mismatch(path: str | os.PathLike, cfg, fmt: str, trusted: bool) -> tuple[str, str]:
    """For the error of a checkpoint that does not fit a recipe: what the file is (' (an official mcnet
    checkpoint)', ' (a model folder of fomm at 256 px)', ...) and, when its converter knows the settings the file
    fixes (keypoint count, memory size, ...), those that differ from the recipe with the ``--cfg-options`` that make
    it fit ('' when none is known).  The file is read once; any failure only drops the hint."""
    from thkit.checkpoint import FORMAT, detect_format, torch_load
    from thkit.convert import get_converter
    from thkit.model_folder import is_model_folder, read_recipe

    try:
        if is_model_folder(path):
            _, meta = read_recipe(path)
            return f" (a model folder of {meta.get('method', 'a thkit model')} at {meta.get('image_size')} px)", ""
        obj = torch_load(path, trusted=trusted)
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            size = (obj.get("meta") or {}).get("image_size")
            return " (a thkit checkpoint" + (f" trained at {size} px)" if size else ")"), ""
        method = fmt if fmt != "auto" else detect_format(obj)
        if method == "unknown":
            return "", ""
        what = f" (an official {method} checkpoint)"
        converter = get_converter(method)
        wanted = converter.checkpoint_settings(obj)
        fits = converter.checkpoint_recipe(obj)
    except Exception:  # noqa: BLE001 - only a hint for a message
        return "", ""
    differ = {}
    for key, value in wanted.items():
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        if node is not None and node != value:
            differ[key] = (node, value)
    if not differ:
        return what, ""
    have = ", ".join(f"{k}={v!r} (the recipe has {r!r})" for k, (r, v) in differ.items())
    if fits:  # a variant that is another recipe
        return what, f"the checkpoint has {have}; use the recipe {fits}"
    opts = " ".join(f"{k}={v}" for k, (_, v) in differ.items())
    return what, f"the checkpoint has {have}; pass --cfg-options {opts} (or cfg_options=)"


def model_info(model: torch.nn.Module) -> dict[str, Any]:
    """``model.meta`` of a model from :func:`create_model` (image size, input range, weights)."""
    meta = getattr(model, "meta", None)
    if meta is None:
        raise RecipeError("", "this model was not made by thkit.create_model (it has no .meta)")
    return meta


def convert_checkpoint(sources: str | os.PathLike | list, output: str | os.PathLike, *, method: str = "auto",
                       config: str | os.PathLike | Mapping[str, Any] | None = None,
                       recipe: str | os.PathLike | None = None, patches: Mapping[str, Any] | None = None,
                       recipe_options: Mapping[str, Any] | None = None, trusted: bool = False,
                       **options: Any) -> Path:
    """Convert official checkpoint file(s) into a model folder (``model.safetensors`` + ``recipe.json`` +
    ``meta.json``) that :func:`create_model` loads with no recipe.

    The recipe comes from ``config`` (the official yaml file or its dict, mapped by the converter's
    ``recipe_from_official`` to the same widths; ``patches`` and ``recipe_options`` go to it, e.g. FOMM's
    ``image_size`` / ``align_corners`` that its yaml cannot tell) or from ``recipe`` (a thkit recipe name or file).
    The model is built and the weights loaded strictly before anything is written.  ``options`` go to the converter
    (SMAC: ``use_ema=False``).
    """
    from thkit.checkpoint import load_state_dict_strict, read_official
    from thkit.convert import get_converter
    from thkit.model_folder import plain, save_model_folder

    files = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    method, sds, meta = read_official(files, method, trusted, **options)
    if (config is None) == (recipe is None):
        raise RecipeError("", "a model folder needs its recipe: pass the official configuration (--config "
                              "vox-256.yaml) or a thkit recipe (--recipe fomm/vox256), one of them")
    if config is not None:
        if not isinstance(config, Mapping):
            import yaml

            path = Path(config)
            if not path.is_file():
                raise RecipeError("", f"official configuration {config} does not exist")
            config = yaml.safe_load(path.read_text())
        rec = get_converter(method).recipe_from_official(config, patches, **dict(recipe_options or {}))
        from mmengine.config import Config

        cfg = Config(plain(rec))
        meta["recipe_from"] = "official configuration"
    else:
        cfg = load_recipe(recipe)
        meta["recipe_from"] = str(recipe)
    model, nets = build_parts(cfg, tuple(k for k in sds if k != "model"))
    try:
        load_state_dict_strict(model, sds["model"], "model")
    except CheckpointError as e:  # what the file is and the settings (or recipe) it needs, as create_model says
        what, fix = _describe_mismatch(files[0], cfg, method, trusted) if len(files) == 1 else ("", "")
        if not fix:
            raise
        raise CheckpointError(f"checkpoint {files[0]}{what} does not fit recipe {recipe or meta['recipe_from']}: "
                              f"{fix}") from e
    for name, net in nets.items():
        load_state_dict_strict(net, sds[name], name)
    sds = {k: v for k, v in sds.items() if k == "model" or k in nets}
    return save_model_folder(output, sds, cfg.to_dict(), meta)


def _frames_of(driving: Any, max_frames: int | None) -> Any:
    from thkit.inference.video import iter_frames

    if isinstance(driving, (str, os.PathLike)):
        return iter_frames(driving, max_frames, what="driving video")
    arr = driving.detach().cpu().numpy() if isinstance(driving, torch.Tensor) else np.asarray(driving)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise RecipeError("", f"driving frames must be a video file or a (T, H, W, 3) uint8 array, got "
                              f"{arr.dtype} {tuple(arr.shape)}")
    return iter(arr[:max_frames] if max_frames else arr)


def animate(source: Any, driving: Any, model: Any, out: str | os.PathLike | None = None, *,
            size: int | None = None, relative: bool | None = None, adapt_movement_scale: bool | None = None,
            relative_jacobian: bool | None = None, device: str | torch.device | None = None,
            batch_size: int | None = None, max_frames: int | None = None, progress: bool = False,
            best_frame: int | None = None, find_best_frame: bool = False, pose: Any = None, expression: Any = None,
            align: bool | None = None, precision: str | None = None, backend: str = "torch", nnpack: bool = False,
            **options: Any):
    """Animate ``source`` (an image file or an (H, W, 3) uint8 array) with ``driving`` (a video file, or
    (T, H, W, 3) uint8 frames) by ``model`` (a :func:`create_model` model, or what it takes: a recipe name or a
    model folder).

    Without ``out``: returns the frames, ``(T, size, size, 3)`` uint8.  With ``out``: writes a video (the
    driving video's frame rate and audio; ``options`` are :func:`thkit.inference.animate.animate_video`'s:
    ``crop``, ``side_by_side``, ``audio``, ``crf``, ...) and returns its
    :class:`~thkit.inference.animate.AnimateResult`.  Motion transfer defaults come from the recipe.

    ``best_frame=N`` takes relative motion from driving frame ``N`` instead of the first; ``find_best_frame=True``
    from the frame whose face landmarks best match the source's (FOMM's demo; :mod:`thkit.inference.best_frame`).

    ``pose`` (``'yaw=10,pitch=0'`` or ``{'yaw': 10}``, degrees added to the driving head pose), ``expression``
    (``'mouth_open=0.5'``) and ``align`` (pose alignment of the source to the first driving frame; default the
    recipe's ``pose_alignment``): :func:`thkit.transfer_control.build_motion_control`.

    ``precision``: ``'fp32'``, ``'bf16'`` or ``'fp16'`` autocast (default: the model's ``meta['precision']``, else
    fp32); ``backend='onnxruntime'``: the model's ONNX export run by onnxruntime (:func:`thkit.backends.backend_model`),
    float32 or, with ``precision='int8'``, its convolutions quantized (:mod:`thkit.quantize`); ``nnpack=True`` (with
    onnxruntime, float32): its wide 3x3 convolutions by NNPACK's Winograd (:mod:`thkit.nnpack`).
    """
    from thkit.backends import animator_precision, backend_model
    from thkit.inference.animate import (
        _prepare,
        _to_uint8,
        animate_video,
        check_reference,
        motion_settings,
        read_image,
        set_reference,
    )
    from thkit.inference.stream import StreamingAnimator, resolve_batch_size
    from thkit.value_range import from_unit, to_unit

    if not isinstance(model, torch.nn.Module):
        model = create_model(model, size=size, device=device)
    dev = next(model.parameters()).device if device is None else torch.device(device)
    model = model.to(dev).eval()
    cfg = getattr(model, "recipe", None) or {}
    size = int(size or (cfg.get("image_size") if cfg else None) or 256)
    input_range = tuple(float(v) for v in getattr(model, "input_range", (0.0, 1.0)))
    mt = motion_settings(cfg, relative=relative, adapt_scale=adapt_movement_scale,
                         relative_jacobian=relative_jacobian)
    from thkit.transfer_control import build_motion_control

    control = build_motion_control(cfg, pose=pose, expression=expression, align=align)
    if control is not None:
        options["control"] = control
    if precision is None:
        precision = (getattr(model, "meta", None) or {}).get("precision")
    model = backend_model(model, backend, precision, dev, motion=mt, nnpack=nnpack)
    precision = animator_precision(backend, precision)
    if out is not None:
        if not isinstance(driving, (str, os.PathLike)):
            raise RecipeError("", "animate(..., out=...) reads the driving video from a file; pass a path")
        return animate_video(model, source, driving, out, image_size=size, input_range=input_range,
                             device=dev, batch_size=batch_size, progress=progress, max_frames=max_frames,
                             best_frame=best_frame, find_best_frame=find_best_frame, precision=precision, **mt,
                             **options)
    control = options.pop("control", None)
    if options:
        raise TypeError(f"animate() without out= takes no video options ({', '.join(options)})")
    src = read_image(source) if isinstance(source, (str, os.PathLike)) else np.ascontiguousarray(source)
    anim = StreamingAnimator(model, batch_size=resolve_batch_size(batch_size, dev), control=control,
                             precision=precision, **mt)
    anim.set_source(from_unit(_prepare(src, None, size), input_range).unsqueeze(0).to(dev))
    driving_frames = _frames_of(driving, max_frames)
    if best_frame is not None or find_best_frame:
        driving_frames = list(driving_frames)
        label = f"the driving video {driving}" if isinstance(driving, (str, os.PathLike)) else "the driving frames"
        check_reference(best_frame, find_best_frame, mt["relative"], num_frames=len(driving_frames), label=label)
        if find_best_frame:
            from thkit.inference.best_frame import find_best_frame as find

            best_frame = find(src, driving_frames, driving_name=label).index
        ref = from_unit(_prepare(driving_frames[best_frame], None, size), input_range).unsqueeze(0).to(dev)
        set_reference(anim, model, ref)
    frames = (from_unit(_prepare(f, None, size), input_range).to(dev) for f in driving_frames)
    res = [_to_uint8(to_unit(p, input_range)) for p in anim.run(frames)]
    return np.stack(res) if res else np.zeros((0, size, size, 3), np.uint8)

"""``thkit train``: turn a recipe into an mmengine ``Runner`` and train.

A trainable recipe holds, besides ``model`` (the generator, unchanged), ``discriminator`` and
``image_size``/``input_range``:

* ``losses``: named, weighted losses (:mod:`thkit.losses.bundle`);
* ``train_dataloader`` (and optionally ``val_dataloader`` + ``val_evaluator``): datasets get
  ``image_size`` and ``input_range`` from the recipe unless they set their own;
* ``optim_wrapper`` (one per sub-network, :class:`~thkit.engine.optim.MultiOptimWrapperConstructor`),
  ``param_scheduler``, ``train_cfg`` (iterations, validation interval);
* runtime: hooks, logging, visualisation backends, seed (``recipes/_base_/runtime.py``);
* ``trainer``: options of :class:`~thkit.engine.trainer.TalkingHeadTrainer` (optional).

The training model (``TalkingHeadTrainer``: generator + discriminator + losses) is assembled here, so the
recipe's ``model`` stays the generator that ``thkit build`` and inference use.  The resolved recipe is saved
as ``WORK_DIR/recipe.py``.

Distributed training: ``torchrun --nproc_per_node=N -m thkit.cli train RECIPE`` (launcher ``pytorch``).  On
CPU the process group is gloo and initialised here (mmengine would call ``torch.cuda.set_device``), and DDP
gets ``device_ids=None`` (see :mod:`thkit._compat.mmengine`).  GAN training wraps the generator and the
discriminator in separate DDP modules (``MMSeparateDistributedDataParallel``).
"""
from __future__ import annotations

import copy
import inspect
import os
import os.path as osp
import uuid
from pathlib import Path
from typing import Any

from thkit.errors import RecipeError, ThkitError

AMP_CHOICES = ("none", "fp16", "bf16")
_REQUIRED = {
    "losses": "named, weighted losses, e.g. losses = dict(perceptual=dict(type='PerceptualPyramidLoss', ...))",
    "train_dataloader": "the training data, e.g. from recipes/_base_/datasets/synthetic.py",
    "optim_wrapper": "the optimisers, e.g. from recipes/_base_/schedules/fomm_vox.py",
    "train_cfg": "the schedule (max_iters, val_interval), e.g. from recipes/_base_/schedules/fomm_vox.py",
}


def _plain(x: Any) -> Any:
    return x.to_dict() if hasattr(x, "to_dict") else copy.deepcopy(x)


def _device_type() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_work_dir(recipe: str | os.PathLike) -> str:
    """``work_dirs/<method>_<variant>`` for ``recipes/<method>/<variant>.py`` (else the file's stem)."""
    p = Path(recipe)
    parent = p.parent.name if p.parent.name and p.parent.name not in (".", "recipes") else ""
    return osp.join("work_dirs", f"{parent}_{p.stem}" if parent else p.stem)


def _accepts(cls: Any, name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    if name in params:
        return True
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        # FramesDataset subclasses forward **kwargs to FramesDataset
        for base in getattr(cls, "__mro__", ())[1:]:
            try:
                if name in inspect.signature(base).parameters:
                    return True
            except (TypeError, ValueError):
                continue
    return False


def _fill_dataset(ds: Any, image_size: Any, input_range: Any, path: str) -> Any:
    """Give a dataset config the recipe's ``image_size`` / ``input_range`` unless it sets them."""
    if not isinstance(ds, dict):
        return ds
    ds = dict(ds)
    if "type" not in ds:
        raise RecipeError(f"{path}.type", "a dataset config needs a 'type' (e.g. 'FramesDataset', "
                          "'SyntheticTalkingHeads')")
    from thkit.registry import DATASETS

    cls = DATASETS.get(ds["type"]) if isinstance(ds["type"], str) else ds["type"]
    if cls is None:
        from thkit.errors import suggest

        hint = suggest(ds["type"], DATASETS.module_dict)
        raise RecipeError(f"{path}.type", f"unknown dataset {ds['type']!r}; {hint}")
    if "dataset" in ds and isinstance(ds["dataset"], dict):
        ds["dataset"] = _fill_dataset(ds["dataset"], image_size, input_range, f"{path}.dataset")
    if image_size is not None and _accepts(cls, "image_size"):
        ds.setdefault("image_size", image_size)
    if input_range is not None and _accepts(cls, "input_range"):
        ds.setdefault("input_range", tuple(input_range))
    return ds


def _loader(cfg: dict, image_size: Any, input_range: Any, path: str, train: bool) -> dict:
    cfg = dict(cfg)
    if "dataset" not in cfg:
        raise RecipeError(f"{path}.dataset", "a dataloader needs a dataset")
    cfg["dataset"] = _fill_dataset(cfg["dataset"], image_size, input_range, f"{path}.dataset")
    cfg.setdefault("collate_fn", dict(type="default_collate"))
    if train:
        cfg.setdefault("sampler", dict(type="ResumableInfiniteSampler", shuffle=True))
        if cfg["sampler"].get("type") == "ResumableInfiniteSampler":
            cfg["dataset"] = dict(type="SeededDataset", dataset=cfg["dataset"])
    else:
        cfg.setdefault("sampler", dict(type="DefaultSampler", shuffle=False))
    cfg.setdefault("num_workers", 0)
    if cfg["num_workers"] == 0:
        cfg.pop("persistent_workers", None)
    return cfg


def _amp(optim_wrapper: dict, amp: str, device: str) -> dict:
    if amp in (None, "none"):
        return optim_wrapper
    if amp not in AMP_CHOICES:
        raise ThkitError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "fp16" and device != "cuda":
        raise ThkitError("--amp fp16 needs a CUDA GPU (fp16 without a GPU is not supported by torch's CPU autocast "
                         "for most layers); use --amp bf16 on the CPU")
    if device == "cuda":
        new = dict(type="AmpOptimWrapper", dtype="float16" if amp == "fp16" else "bfloat16")
    else:
        new = dict(type="AutocastOptimWrapper", dtype="bfloat16")
    ow = dict(optim_wrapper)
    if ow.get("constructor") == "MultiOptimWrapperConstructor":
        for k, v in ow.items():
            if k != "constructor" and isinstance(v, dict):
                v = dict(v)
                v.update(new)
                ow[k] = v
    else:
        ow.update(new)
    return ow


def _visualizer(cfg: dict | None) -> dict:
    vis = dict(cfg or dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")]))
    backends = []
    for b in vis.get("vis_backends", []) or []:
        if b.get("type") == "TensorboardVisBackend":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                from mmengine.logging import print_log

                print_log("TensorBoard logging is off: the 'tensorboard' package is not installed "
                          "(pip install tensorboard)", logger="current", level=30)
                continue
        backends.append(b)
    vis["vis_backends"] = backends
    vis.setdefault("name", f"thkit_visualizer_{uuid.uuid4().hex[:8]}")
    return vis


def _hooks(default_hooks: dict | None) -> dict:
    hooks = _plain(default_hooks) or {}
    ck = hooks.get("checkpoint")
    if isinstance(ck, dict) and ck.get("type") in (None, "CheckpointHook"):
        ck = dict(ck)
        ck["type"] = "AtomicCheckpointHook"
        hooks["checkpoint"] = ck
    hooks.setdefault("checkpoint", dict(type="AtomicCheckpointHook", interval=1000, by_epoch=False, max_keep_ckpts=3))
    hooks["checkpoint"].setdefault("by_epoch", False)
    if isinstance(hooks.get("logger"), dict):
        hooks["logger"] = dict(hooks["logger"])
        hooks["logger"].setdefault("log_metric_by_epoch", False)
    return hooks


def resolve_resume(resume: bool | str | None, work_dir: str) -> str | None:
    """The checkpoint to resume from: a given path, or (``True``/``'auto'``) the last one in ``work_dir``."""
    if resume in (None, False, ""):
        return None
    from thkit.engine.loop import last_checkpoint

    if resume is True or resume == "auto":
        path = last_checkpoint(work_dir)
        if path is None:
            raise ThkitError(f"--resume: no checkpoint to resume from in {work_dir} (no last_checkpoint file or its "
                             "checkpoint is missing); pass --resume PATH or start without --resume")
        return path
    if not osp.isfile(str(resume)):
        raise ThkitError(f"--resume: checkpoint {resume} does not exist")
    return str(resume)


def runner_kwargs(cfg, work_dir: str, resume_from: str | None = None, launcher: str = "none",
                  amp: str | None = None) -> dict[str, Any]:
    """The keyword arguments of ``mmengine.runner.Runner`` for a resolved recipe ``cfg``."""
    missing = [k for k in _REQUIRED if k not in cfg or cfg[k] is None]
    if missing:
        raise RecipeError(missing[0], "this recipe cannot be trained: it has no " + "; no ".join(
            f"'{k}' ({_REQUIRED[k]})" for k in missing))
    device = _device_type()
    image_size = cfg.get("image_size")
    model_cfg = _plain(cfg.model)
    input_range = cfg.get("input_range", model_cfg.get("input_range", (0.0, 1.0)))
    trainer = dict(type="TalkingHeadTrainer")
    trainer.update(_plain(cfg.get("trainer")) or {})
    trainer.update(generator=model_cfg, losses=_plain(cfg.losses), discriminator=_plain(cfg.get("discriminator")))
    from thkit.registry import MODELS

    trainer_cls = MODELS.get(trainer["type"]) if isinstance(trainer["type"], str) else trainer["type"]
    if image_size is not None and (trainer_cls is None or _accepts(trainer_cls, "image_size")):
        trainer.setdefault("image_size", image_size)  # it hands the size to every part that takes it

    train_cfg = dict(_plain(cfg.train_cfg))
    if train_cfg.get("type") in (None, "IterBasedTrainLoop"):
        train_cfg["type"] = "ResumableIterBasedTrainLoop"
    train_cfg.pop("by_epoch", None)
    if "max_iters" not in train_cfg:
        raise RecipeError("train_cfg.max_iters", "thkit trains by iterations: set train_cfg.max_iters")

    kw: dict[str, Any] = dict(
        model=trainer,
        work_dir=work_dir,
        train_dataloader=_loader(_plain(cfg.train_dataloader), image_size, input_range, "train_dataloader", True),
        train_cfg=train_cfg,
        optim_wrapper=_amp(_plain(cfg.optim_wrapper), amp or cfg.get("amp", "none"), device),
        param_scheduler=_plain(cfg.get("param_scheduler")),
        default_hooks=_hooks(cfg.get("default_hooks")),
        custom_hooks=_plain(cfg.get("custom_hooks")) or [],
        launcher=launcher,
        env_cfg=_plain(cfg.get("env_cfg")) or dict(cudnn_benchmark=False),
        log_processor=dict(by_epoch=False, **{k: v for k, v in (_plain(cfg.get("log_processor")) or {}).items()
                                              if k != "by_epoch"}),
        log_level=cfg.get("log_level", "INFO"),
        visualizer=_visualizer(_plain(cfg.get("visualizer"))),
        default_scope="thkit",
        randomness=dict(seed=int(cfg.get("seed", 0)), deterministic=bool(cfg.get("deterministic", False)),
                        diff_rank_seed=False),
        # mmengine appends the timestamp; the random part keeps two runs started in the same second apart
        experiment_name=f"{Path(str(cfg.filename or 'recipe')).stem}_{uuid.uuid4().hex[:6]}",
        cfg=cfg,
    )
    kw["env_cfg"].setdefault("dist_cfg", {})
    kw["env_cfg"]["dist_cfg"] = dict(kw["env_cfg"]["dist_cfg"], backend="nccl" if device == "cuda" else "gloo")
    if cfg.get("val_dataloader") is not None:
        kw["val_dataloader"] = _loader(_plain(cfg.val_dataloader), image_size, input_range, "val_dataloader", False)
        kw["val_cfg"] = _plain(cfg.get("val_cfg")) or dict(type="ValLoop")
        ev = _plain(cfg.get("val_evaluator")) or [dict(type="L1"), dict(type="PSNR")]
        ev = ev if isinstance(ev, list) else [ev]
        kw["val_evaluator"] = [dict(m, input_range=tuple(input_range)) if isinstance(m, dict) and "input_range"
                               not in m else m for m in ev]
    else:
        kw["train_cfg"].setdefault("val_interval", 10**12)
    if launcher != "none":
        wrapper = _plain(cfg.get("model_wrapper_cfg")) or dict(
            type="MMSeparateDistributedDataParallel", broadcast_buffers=False,
            find_unused_parameters=bool(cfg.get("find_unused_parameters", False)))
        from thkit._compat.mmengine import ddp_wrapper_cfg

        # the Runner reads the wrapper from its cfg (not from a keyword argument)
        runner_cfg = copy.deepcopy(cfg)
        runner_cfg.model_wrapper_cfg = ddp_wrapper_cfg(wrapper, device)
        kw["cfg"] = runner_cfg
    if resume_from:
        kw.update(resume=True, load_from=resume_from)
    return kw


def _prepare_data(kw: dict[str, Any]) -> None:
    """Build the datasets once on the main process first (a synthetic dataset writes itself when missing),
    then let the other processes in."""
    from mmengine.dist import barrier, get_rank, is_distributed
    from mmengine.registry import DefaultScope

    from thkit.registry import DATASETS

    if get_rank() == 0:
        with DefaultScope.overwrite_default_scope("thkit"):
            for key in ("train_dataloader", "val_dataloader"):
                if key in kw and isinstance(kw[key].get("dataset"), dict):
                    DATASETS.build(copy.deepcopy(kw[key]["dataset"]))
    if is_distributed():
        barrier()


def build_runner(recipe: str | os.PathLike, work_dir: str | None = None, resume: bool | str | None = None,
                 cfg_options: dict[str, Any] | None = None, launcher: str | None = None, amp: str | None = None,
                 size: int | None = None):
    """Load ``recipe`` (with ``cfg_options``) and return an mmengine ``Runner`` ready to ``train()``.

    Args:
        recipe: a recipe file or a name under ``recipes/`` (``fomm/small``).
        work_dir: output folder (default: the recipe's ``work_dir`` or ``work_dirs/<method>_<variant>``).
        resume: ``True``/``'auto'``: continue from the last checkpoint in ``work_dir``; a path: from that file.
        cfg_options: ``--cfg-options`` overrides.
        launcher: ``'none'`` or ``'pytorch'`` (default: ``'pytorch'`` under torchrun with more than one process).
        amp: ``'fp16'`` / ``'bf16'`` mixed precision (``'bf16'`` works on the CPU).
        size: train at this image size (the recipe's ``image_size``, handed to every part that takes it;
            explicit ``cfg_options`` still win).
    """
    from thkit._compat.mmengine import apply_engine, init_cpu_distributed

    apply_engine()
    import thkit.engine.components  # noqa: F401 - registers the engine parts
    from thkit.plugins import load_plugins
    from thkit.recipe import find_recipe, load_recipe
    from thkit.registry import import_builtins

    import_builtins()
    load_plugins()
    path = find_recipe(recipe)
    cfg = load_recipe(path, cfg_options, size=size)
    if launcher is None:
        launcher = "pytorch" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "none"
    if launcher not in ("none", "pytorch"):
        raise ThkitError(f"--launcher must be 'none' or 'pytorch', got {launcher!r}")
    if launcher == "pytorch" and _device_type() == "cpu":
        if not init_cpu_distributed("gloo"):
            raise ThkitError("--launcher pytorch needs torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, "
                             "MASTER_PORT); run: torchrun --nproc_per_node=N -m thkit.cli train RECIPE")
    work_dir = work_dir or cfg.get("work_dir") or default_work_dir(path)
    work_dir = osp.abspath(work_dir)
    resume_from = resolve_resume(resume, work_dir)
    kw = runner_kwargs(cfg, work_dir, resume_from, launcher, amp)
    _prepare_data(kw)
    from mmengine.dist import get_rank

    if get_rank() == 0:
        os.makedirs(work_dir, exist_ok=True)
        cfg.dump(osp.join(work_dir, "recipe.py"))
    from mmengine.runner import Runner

    return Runner(**kw)


def train(recipe: str | os.PathLike, **kwargs):
    """Build the runner (:func:`build_runner`) and train; returns the runner."""
    runner = build_runner(recipe, **kwargs)
    runner.train()
    return runner


__all__ = ["AMP_CHOICES", "build_runner", "default_work_dir", "resolve_resume", "runner_kwargs", "train"]

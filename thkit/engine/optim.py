"""Optimiser wrappers for GAN training and mixed precision.

* :class:`MultiOptimWrapperConstructor`: one optimiser wrapper per named sub-network of the training model
  (``generator``, ``discriminator``), returned as mmengine's ``OptimWrapperDict``.  A recipe writes::

      optim_wrapper = dict(
          constructor='MultiOptimWrapperConstructor',
          generator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999)),
                         clip_grad=dict(max_norm=10)),
          discriminator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999))))

  Entries whose sub-network does not exist (e.g. no discriminator because no loss is adversarial) are
  skipped.  Parameter schedulers are then given per optimiser (``param_scheduler=dict(generator=[...],
  discriminator=[...])``) or as one list applied to each.
* :class:`AutocastOptimWrapper`: ``torch.autocast`` (bf16 by default) without a loss scaler, on any device.
  mmengine's ``AmpOptimWrapper`` refuses the CPU; bf16 needs no loss scaling.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

from thkit.errors import RecipeError
from thkit.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16}


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MultiOptimWrapperConstructor:
    """Build one optimiser wrapper per named sub-network -> ``OptimWrapperDict``.

    Args:
        optim_wrapper_cfg: ``{sub-network name: optimiser wrapper config}``; each config may carry its own
            ``constructor`` (default ``DefaultOptimWrapperConstructor``) and ``paramwise_cfg``.
        paramwise_cfg: must be None here (give it per sub-network).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        if paramwise_cfg is not None:
            raise RecipeError("optim_wrapper.paramwise_cfg", "give paramwise_cfg inside each sub-network's entry "
                              "(e.g. optim_wrapper.generator.paramwise_cfg)")
        if not isinstance(optim_wrapper_cfg, dict) or not optim_wrapper_cfg:
            raise RecipeError("optim_wrapper", "expected {sub-network name: optimiser wrapper config}, e.g. "
                              "generator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4))")
        for name, cfg in optim_wrapper_cfg.items():
            if not isinstance(cfg, dict):
                raise RecipeError(f"optim_wrapper.{name}", f"expected an optimiser wrapper config dict, got "
                                  f"{type(cfg).__name__}")
        self.cfgs = copy.deepcopy(dict(optim_wrapper_cfg))

    def __call__(self, model: torch.nn.Module) -> OptimWrapperDict:
        module = model.module if is_model_wrapper(model) else model
        wrappers = {}
        for name, cfg in self.cfgs.items():
            sub = getattr(module, name, None)
            if sub is None:
                print_log(f"optim_wrapper.{name}: the training model has no {name!r}; no optimiser built for it",
                          logger="current")
                continue
            if not isinstance(sub, torch.nn.Module) or not any(p.requires_grad for p in sub.parameters()):
                print_log(f"optim_wrapper.{name}: {name!r} has no trainable parameters; no optimiser built for it",
                          logger="current")
                continue
            cfg = dict(cfg)
            constructor = cfg.pop("constructor", "DefaultOptimWrapperConstructor")
            paramwise = cfg.pop("paramwise_cfg", None)
            builder = OPTIM_WRAPPER_CONSTRUCTORS.build(
                dict(type=constructor, optim_wrapper_cfg=cfg, paramwise_cfg=paramwise))
            wrappers[name] = builder(sub)
        if not wrappers:
            raise RecipeError("optim_wrapper", f"none of {', '.join(self.cfgs)} is a trainable part of the model")
        return OptimWrapperDict(**wrappers)


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` that runs the forward pass under ``torch.autocast`` (no loss scaler).

    For bf16 on the CPU (and on GPUs), where no loss scaling is needed; fp16 on CUDA should use mmengine's
    ``AmpOptimWrapper`` (which has the scaler).

    Args:
        dtype: ``'bfloat16'`` (default) or ``'float16'``.
        device_type: autocast device; default: the device of the model's first parameter.
        **kwargs: :class:`mmengine.optim.OptimWrapper` arguments (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(self, dtype: str | torch.dtype = "bfloat16", device_type: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise RecipeError("optim_wrapper.dtype", f"unknown autocast dtype {dtype!r} (bfloat16 or float16)")
            dtype = _DTYPES[dtype]
        self.dtype = dtype
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        device_type = self.device_type
        if device_type is None:
            p = next(model.parameters(), None)
            device_type = p.device.type if p is not None else "cpu"
        with super().optim_context(model), torch.autocast(device_type=device_type, dtype=self.dtype):
            yield


__all__ = ["AutocastOptimWrapper", "MultiOptimWrapperConstructor"]

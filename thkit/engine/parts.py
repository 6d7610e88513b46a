"""Training settings that address parts of the generator by their path in the model (``'motion'``,
``'motion.bg_predictor'``, ``'keypoint_detector'``): gradient clipping per part and attribute schedules.

* :class:`PartClipOptimWrapper`: an ``OptimWrapper`` that clips the gradient of each named part on its own
  (``torch.nn.utils.clip_grad_norm_`` per part), as official code that calls ``clip_grad_norm_`` once per
  network does.  A parameter belongs to the longest listed path that contains it, so ``['motion',
  'motion.bg_predictor']`` clips the motion estimator without its sub-network and the sub-network on its own;
  parameters under no listed path are not clipped.  An entry that is a list of paths is one group clipped with
  one joint norm (``[['motion', 'encoder', 'decoder'], 'keypoint_detector']``: official code that clips a
  generator made of several thkit parts as one network).
* :class:`PartAttributeScheduleHook`: sets an attribute of a part from the training iteration (a step
  schedule: ``milestones=[(0, 0.1), (1000, 0.2), ...]``), e.g. a dropout probability or a switch that turns a
  sub-network on after a warm-up.  It is recomputed before every iteration from the iteration number, so a
  resumed run gets the value it had.

Generic: neither names a method; recipes say which part and attribute.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper

from thkit.errors import RecipeError
from thkit.registry import HOOKS, OPTIM_WRAPPERS


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while is_model_wrapper(module):
        module = module.module
    return module


def _norm_type(value: Any) -> float:
    if isinstance(value, str):
        if value.lower() in ("inf", "infinity", "max"):
            return math.inf
        raise RecipeError("optim_wrapper.clip_parts.norm_type", f"expected a number or 'inf', got {value!r}")
    return float(value)


def get_part(root: torch.nn.Module, path: str, what: str) -> Any:
    """``root.a.b`` for ``path='a.b'``; a :class:`RecipeError` at ``what`` naming the missing step otherwise."""
    obj: Any = root
    for step in path.split("."):
        if obj is None or not hasattr(obj, step):
            raise RecipeError(what, f"the model has no part {path!r} ({step!r} not found)")
        obj = getattr(obj, step)
    if obj is None:
        raise RecipeError(what, f"the model's part {path!r} is None (not built by this recipe)")
    return obj


@OPTIM_WRAPPERS.register_module()
class PartClipOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with gradient clipping per part of the model it steps.

    Args:
        clip_parts: ``dict(parts=[path, ...], max_norm=10, norm_type='inf')``: the gradient of each part (its
            parameters that no longer listed path claims) is clipped to ``max_norm`` on its own; an entry that is
            a list of paths is clipped as one group (one norm over all of its parts).
        **kwargs: :class:`mmengine.optim.OptimWrapper` arguments (``optimizer``, ``clip_grad`` for a global clip
            applied after the per-part ones, ...).

    The model is the one the training step enters :meth:`optim_context` with (the trainer does so for every
    step), so the parts are found by name without the optimiser knowing the model in advance.
    """

    def __init__(self, clip_parts: dict, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(clip_parts, dict) or not clip_parts.get("parts"):
            raise RecipeError("optim_wrapper.clip_parts", "expected dict(parts=['keypoint_detector', ...], "
                              f"max_norm=10, norm_type='inf'), got {clip_parts!r}")
        unknown = sorted(set(clip_parts) - {"parts", "max_norm", "norm_type"})
        if unknown:
            raise RecipeError("optim_wrapper.clip_parts", f"unknown key(s) {', '.join(unknown)} (expected parts, "
                              "max_norm, norm_type)")
        self.clip_part_groups = [tuple(e) if isinstance(e, (list, tuple)) else (e, ) for e in clip_parts["parts"]]
        if not all(g and all(isinstance(p, str) for p in g) for g in self.clip_part_groups):
            raise RecipeError("optim_wrapper.clip_parts.parts", "expected part paths or lists of part paths, got "
                              f"{clip_parts['parts']!r}")
        self.clip_part_paths = [p for g in self.clip_part_groups for p in g]
        self.clip_max_norm = float(clip_parts.get("max_norm", 10.0))
        self.clip_norm_type = _norm_type(clip_parts.get("norm_type", 2.0))
        self._model: torch.nn.Module | None = None
        self._groups: list[tuple[str, list[torch.nn.Parameter]]] | None = None

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        model = _unwrap(model)
        if model is not self._model:
            self._model, self._groups = model, None
        with super().optim_context(model):
            yield

    def part_groups(self) -> list[tuple[str, list[torch.nn.Parameter]]]:
        """``[(path, parameters)]``: each parameter under its longest listed path (a group of paths is one entry,
        named ``'a+b'``)."""
        if self._groups is not None:
            return self._groups
        if self._model is None:
            raise RuntimeError("PartClipOptimWrapper.step before optim_context(model): the training step must run "
                               "its forward pass inside optim_wrapper.optim_context(model)")
        for path in self.clip_part_paths:
            get_part(self._model, path, "optim_wrapper.clip_parts.parts")
        paths = sorted(self.clip_part_paths, key=lambda p: -len(p.split(".")))
        groups: dict[str, list[torch.nn.Parameter]] = {p: [] for p in self.clip_part_paths}
        for name, param in self._model.named_parameters():
            for p in paths:
                if name.startswith(p + "."):
                    groups[p].append(param)
                    break
        self._groups = [("+".join(g), [q for p in g for q in groups[p]]) for g in self.clip_part_groups]
        return self._groups

    def clip_parts(self) -> dict[str, float]:
        """Clip every part's gradient; returns each part's norm before clipping."""
        norms = {}
        for path, params in self.part_groups():
            with_grad = [p for p in params if p.grad is not None]
            if with_grad:
                norms[path] = float(torch.nn.utils.clip_grad_norm_(with_grad, self.clip_max_norm,
                                                                   norm_type=self.clip_norm_type))
        return norms

    def step(self, **kwargs) -> None:
        self.clip_parts()
        super().step(**kwargs)


@HOOKS.register_module()
class PartAttributeScheduleHook(Hook):
    """Set ``generator.<part>.<attribute>`` before every training iteration from a step schedule.

    Args:
        part: dotted path of the part inside the generator (``'motion'``).
        attribute: an existing attribute of that part (``'dropout_p'``).
        milestones: ``[(start_iteration, value), ...]`` with increasing iterations, the first at 0: from each
            start iteration on (0-based, as mmengine counts) the attribute has that value.
    """

    priority = "NORMAL"

    def __init__(self, part: str, attribute: str, milestones: Sequence[Sequence[Any]]):
        self.part = str(part)
        self.attribute = str(attribute)
        where = f"custom_hooks.PartAttributeScheduleHook({part}.{attribute}).milestones"
        try:
            pairs = [(int(m[0]), m[1]) for m in milestones]
        except (TypeError, ValueError, IndexError) as e:
            raise RecipeError(where, f"expected [(start_iteration, value), ...], got {milestones!r}") from e
        if not pairs or pairs[0][0] != 0:
            raise RecipeError(where, f"the first milestone must start at iteration 0, got {milestones!r}")
        if any(b[0] <= a[0] for a, b in zip(pairs, pairs[1:])):
            raise RecipeError(where, f"start iterations must increase, got {[p[0] for p in pairs]}")
        self.milestones = pairs

    def value_at(self, iteration: int) -> Any:
        value = self.milestones[0][1]
        for start, v in self.milestones:
            if iteration < start:
                break
            value = v
        return value

    def _target(self, runner) -> Any:
        model = _unwrap(runner.model)
        gen = getattr(model, "gen", None) or getattr(model, "generator", None)
        if gen is None:
            raise RecipeError("custom_hooks.PartAttributeScheduleHook", "the training model has no generator")
        obj = get_part(_unwrap(gen), self.part, f"custom_hooks.PartAttributeScheduleHook({self.part})")
        if not hasattr(obj, self.attribute):
            raise RecipeError(f"custom_hooks.PartAttributeScheduleHook({self.part})",
                              f"part {self.part!r} ({type(obj).__name__}) has no attribute {self.attribute!r}")
        return obj

    def before_train(self, runner) -> None:
        self._target(runner)  # a wrong path fails before the first iteration

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        setattr(self._target(runner), self.attribute, self.value_at(runner.iter))


__all__ = ["PartAttributeScheduleHook", "PartClipOptimWrapper", "get_part"]

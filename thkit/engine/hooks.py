"""Training hooks: crash-safe checkpoints that resume exactly, a progress bar, sample grids, records and
loss curves, and the final weights as a thkit checkpoint.

=========================  ==================================================================================
``AtomicCheckpointHook``    mmengine's ``CheckpointHook`` writing atomically, in a crash-safe order, with the
                            random generators' states (exact resume); see :mod:`thkit._compat.mmengine`
``ProgressBarHook``         tqdm bar: iteration, ETA, iterations/s and the current losses (terminals only by
                            default; the logger hook prints the same numbers into the log every N iterations)
``SampleGridHook``          every ``interval`` iterations a PNG grid (source, driving, prediction, warped
                            source, flow, occlusion) of fixed samples in ``work_dir/samples``, also sent to
                            the visualiser (TensorBoard)
``TrainRecordsHook``        every iteration's losses in ``work_dir/records/train.jsonl`` (validation results in
                            ``val.jsonl``), and ``work_dir/records/loss_curves.png`` at the end
``TimeBudgetHook``          stop cleanly after a wall- or CPU-time budget (fixed-budget runs, benchmarks),
                            optionally decaying the learning rates at fractions of the budget
``GeneratorEMAHook``        an exponential moving average of (parts of) the generator, saved in and resumed
                            from the checkpoints, swapped in for validation and exported as the weights
``ExportWeightsHook``       at the end, ``work_dir/<name>.pth``: a thkit checkpoint (generator and
                            discriminator weights only) for ``thkit build --checkpoint`` and inference
=========================  ==================================================================================
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
import sys
from typing import Any

import torch
from mmengine.dist import is_main_process, master_only
from mmengine.hooks import CheckpointHook, Hook

from thkit._compat.mmengine import save_checkpoint_with_step, without_file_client_deprecation
from thkit.engine.rng import capture_rng_state, isolated_rng
from thkit.registry import HOOKS

RNG_KEY = "thkit_rng_state"


def _scalar(v: Any) -> float | None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        return float(v.detach().float())
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _trainer(runner):
    from thkit.engine.trainer import unwrap

    return unwrap(runner.model)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that writes checkpoints atomically (``.tmp`` + fsync + rename), updates
    ``last_checkpoint`` atomically after the checkpoint is complete, deletes old checkpoints only after
    that, and stores the random generators' states so that ``--resume`` continues the exact random stream.
    Same arguments as mmengine's ``CheckpointHook``."""

    def before_train(self, runner) -> None:
        if self.file_client_args is None:  # B4 in thkit._compat.mmengine: mmengine's unused FileClient
            with without_file_client_deprecation():
                super().before_train(runner)
        else:  # asked for a FileClient: mmengine's notes apply
            super().before_train(runner)

    def _save_checkpoint_with_step(self, runner, step, meta):
        save_checkpoint_with_step(self, runner, step, meta)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # restored by ResumableIterBasedTrainLoop right before the first resumed iteration
        runner._thkit_resume_rng = checkpoint.get(RNG_KEY)


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A tqdm progress bar with ETA, iterations per second and the current losses.

    Args:
        enabled: ``'auto'`` (only when stderr is a terminal), True or False.
        keys: loss names to show (default: ``loss_g``, ``loss_d`` and the first few terms).
        max_terms: how many terms to show when ``keys`` is not given.
    """

    priority = "BELOW_NORMAL"

    def __init__(self, enabled: bool | str = "auto", keys: list[str] | None = None, max_terms: int = 4):
        self.enabled = enabled
        self.keys = keys
        self.max_terms = int(max_terms)
        self.bar = None

    def before_train(self, runner) -> None:
        on = sys.stderr.isatty() if self.enabled == "auto" else bool(self.enabled)
        if not (on and is_main_process()):
            return
        from tqdm import tqdm

        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc="train", unit="it", dynamic_ncols=True,
                        file=sys.stderr, leave=True, mininterval=0.5)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.bar is None:
            return
        values = {k: _scalar(v) for k, v in (outputs or {}).items()}
        values = {k: v for k, v in values.items() if v is not None}
        keys = self.keys or ([k for k in ("loss_g", "loss_d") if k in values]
                             + [k for k in values if k not in ("loss_g", "loss_d")][: self.max_terms])
        self.bar.set_postfix({k: f"{values[k]:.4g}" for k in keys if k in values}, refresh=False)
        self.bar.update(1)

    def after_train(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@HOOKS.register_module()
class SampleGridHook(Hook):
    """Every ``interval`` iterations (and after the last one) write a PNG grid of fixed samples.

    Rows are ``num_samples`` fixed (source, driving) pairs, from the validation set when there is one, else
    from the training set (with fixed seeds); columns: source, driving, prediction, deformed (source warped by
    the flow), flow (colour wheel: hue = direction, saturation = magnitude), occlusion.  Files go to
    ``work_dir/<out_dir>/iter_<N>.png`` and the image to the visualiser (``samples``, for TensorBoard).
    Runs with the random generators isolated, so it never changes the training.

    Args:
        interval: iterations between grids (0 = only at the end).
        num_samples: rows.
        out_dir: folder inside the work dir.
    """

    priority = "LOW"

    def __init__(self, interval: int = 1000, num_samples: int = 4, out_dir: str = "samples"):
        self.interval = int(interval)
        self.num_samples = int(num_samples)
        self.out_dir = out_dir
        self._batch: dict[str, torch.Tensor] | None = None

    def _fixed_batch(self, runner) -> dict[str, torch.Tensor]:
        if self._batch is not None:
            return self._batch
        dataset = None
        if runner.val_loop is not None and not isinstance(runner.val_loop, dict):
            dataset = runner.val_loop.dataloader.dataset
        elif runner._val_dataloader is not None and not isinstance(runner._val_dataloader, dict):
            dataset = runner._val_dataloader.dataset
        keyed = False
        if dataset is None:
            dataset = runner.train_dataloader.dataset
            keyed = type(dataset).__name__ == "SeededDataset"
        n = min(self.num_samples, len(dataset))
        idx = sorted({int(round(i * (len(dataset) - 1) / max(1, n - 1))) for i in range(n)})
        items = []
        with isolated_rng(0):
            for i in idx:
                items.append(dataset[(i, 1000 + i)] if keyed else dataset[i])
        self._batch = {k: torch.stack([it[k] for it in items]) for k in ("source", "driving")}
        return self._batch

    @master_only
    def write(self, runner, step: int) -> str:
        trainer = _trainer(runner)
        gen = trainer.gen
        batch = self._fixed_batch(runner)
        was_training = gen.training
        gen.eval()
        try:
            with isolated_rng(0), torch.no_grad():
                data, out = trainer.reconstruct(dict(batch))
        finally:
            gen.train(was_training)
        from thkit.engine.visualize import make_grid, sample_columns, save_png

        grid = make_grid(sample_columns(data, out, trainer.input_range))
        path = save_png(grid, osp.join(runner.work_dir, self.out_dir, f"iter_{step:07d}.png"))
        try:
            runner.visualizer.add_image("samples", grid, step=step)
        except Exception as e:  # noqa: BLE001 - a visualiser backend failure must not stop training
            runner.logger.warning(f"SampleGridHook: the visualiser could not take the image: {e}")
        return str(path)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1
        if (self.interval > 0 and step % self.interval == 0) or step == runner.max_iters:
            self.write(runner, step)
            self._last = step

    def after_train(self, runner) -> None:
        # a run stopped early (time budget, early stopping) still ends with a grid of its final weights
        if runner.iter > 0 and getattr(self, "_last", None) != runner.iter:
            self.write(runner, runner.iter)


@HOOKS.register_module()
class TrainRecordsHook(Hook):
    """Every iteration's logged values as JSON lines (``records/train.jsonl``), validation results
    (``records/val.jsonl``), and a loss-curve PNG (``records/loss_curves.png``) at the end.

    On resume the records past the resumed iteration (written by the interrupted run after its last
    checkpoint) are dropped, so the files describe one consistent run.

    Args:
        out_dir: folder inside the work dir.
        plot: write the loss-curve PNG at the end (needs matplotlib).
        flush_interval: write to disk every N iterations (and at checkpoints and the end).
    """

    priority = "LOW"

    def __init__(self, out_dir: str = "records", plot: bool = True, flush_interval: int = 10):
        self.out_dir = out_dir
        self.plot = bool(plot)
        self.flush_interval = max(1, int(flush_interval))
        self._pending: list[str] = []

    def _path(self, runner, name: str) -> str:
        return osp.join(runner.work_dir, self.out_dir, name)

    @master_only
    def before_train(self, runner) -> None:
        os.makedirs(osp.join(runner.work_dir, self.out_dir), exist_ok=True)
        from thkit._compat.mmengine import atomic_write_text
        from thkit.engine.visualize import read_jsonl

        for name in ("train.jsonl", "val.jsonl"):
            path = self._path(runner, name)
            if osp.isfile(path):
                rows = [r for r in read_jsonl(path) if int(r.get("iter", 0)) <= runner.iter]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))

    def _flush(self, runner) -> None:
        if self._pending:
            with open(self._path(runner, "train.jsonl"), "a") as f:
                f.writelines(self._pending)
            self._pending = []

    @master_only
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        row: dict[str, Any] = {"iter": runner.iter + 1}
        for k, v in (outputs or {}).items():
            s = _scalar(v)
            if s is not None:
                row[k] = s if math.isfinite(s) else str(s)
        hub = runner.message_hub
        for key, buf in hub.log_scalars.items():
            name = key.split("/", 1)[1] if key.startswith("train/") else None
            if name and (name.endswith("lr") or name in ("time", "data_time")) and name not in row:
                row[name] = float(buf.current())
        self._pending.append(json.dumps(row) + "\n")
        if len(self._pending) >= self.flush_interval:
            self._flush(runner)

    @master_only
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._flush(runner)

    @master_only
    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        row: dict[str, Any] = {"iter": runner.iter}
        for k, v in (metrics or {}).items():
            s = _scalar(v)
            if s is not None and math.isfinite(s):
                row[k] = s
        with open(self._path(runner, "val.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")

    @master_only
    def after_train(self, runner) -> None:
        self._flush(runner)
        if not self.plot:
            return
        from thkit.engine.visualize import plot_loss_curves, read_jsonl

        try:
            plot_loss_curves(read_jsonl(self._path(runner, "train.jsonl")), self._path(runner, "loss_curves.png"),
                             val=read_jsonl(self._path(runner, "val.jsonl")),
                             title=f"{runner.experiment_name}: losses")
        except ImportError as e:
            runner.logger.warning(f"TrainRecordsHook: no loss-curve PNG ({e}); install matplotlib")


@HOOKS.register_module()
class TimeBudgetHook(Hook):
    """Stop training cleanly after ``seconds`` of wall time, or of this process's CPU time (checked after every
    iteration; the final checkpoint, records and exports happen as at a normal end).  For fixed-budget runs and
    benchmarks.

    A recipe's step schedule (``MultiStepLR`` at iterations ``m_i`` of ``max_iters``) has no meaning when the run
    stops on time instead; ``milestones`` gives it one: every optimiser's learning rates are multiplied by
    ``gamma`` each time the used fraction of the budget passes a milestone (``[0.6, 0.9]`` is FOMM's 60/90 of 100
    epochs), so a short run ends, as a full one does, on a decayed learning rate instead of wherever Adam's noise
    left it at full step size.  The budget and its milestones count from this run's first iteration: a resumed run
    gets a fresh budget and starts again from the rates it resumed with.

    Args:
        seconds: the training-time budget (from the first iteration; data preparation is not counted).
        clock: ``'wall'`` (``time.monotonic``) or ``'cpu'`` (``time.process_time``, all of this process's threads;
            loader workers are other processes): on a shared machine a wall-time budget buys fewer iterations the
            busier the machine is, a CPU-time budget the same compute whatever the load.
        milestones: increasing fractions of the budget in (0, 1) at which the learning rates decay (default: none,
            the rates are left to the recipe's schedulers).
        gamma: the factor applied at each milestone.
    """

    priority = "LOWEST"
    CLOCKS = ("wall", "cpu")

    def __init__(self, seconds: float, clock: str = "wall", milestones=(), gamma: float = 0.1):
        if float(seconds) <= 0:
            raise ValueError(f"TimeBudgetHook: seconds must be > 0, got {seconds}")
        if clock not in self.CLOCKS:
            raise ValueError(f"TimeBudgetHook: clock must be one of {', '.join(self.CLOCKS)}, got {clock!r}")
        milestones = [float(m) for m in milestones]
        if any(not 0 < m < 1 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"TimeBudgetHook: milestones must be increasing fractions of the budget in (0, 1), "
                             f"got {milestones}")
        if not float(gamma) > 0:
            raise ValueError(f"TimeBudgetHook: gamma must be > 0, got {gamma}")
        self.seconds = float(seconds)
        self.clock = clock
        self.milestones = milestones
        self.gamma = float(gamma)
        self._start: float | None = None
        self._base_lrs: list[tuple[dict, float]] = []
        self._decays = 0

    def _now(self) -> float:
        import time

        return time.process_time() if self.clock == "cpu" else time.monotonic()

    def used(self) -> float:
        """The fraction of the budget used so far (0 before training starts)."""
        return 0.0 if self._start is None else (self._now() - self._start) / self.seconds

    def before_train(self, runner) -> None:
        self._start = self._now()
        if self.milestones:
            wrapper = runner.optim_wrapper
            wrappers = wrapper.values() if hasattr(wrapper, "optim_wrappers") else [wrapper]
            self._base_lrs = [(g, g["lr"]) for w in wrappers for g in w.optimizer.param_groups]
            self._decays = 0

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.milestones:
            return
        decays = sum(self.used() >= m for m in self.milestones)
        if decays != self._decays:
            self._decays = decays
            for group, lr in self._base_lrs:
                group["lr"] = lr * self.gamma ** decays
            runner.logger.info(f"{self.used():.0%} of the time budget used at iteration {runner.iter + 1}: learning "
                               f"rates x{self.gamma ** decays:g} of their starting values")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        import torch.distributed as dist

        over = self._start is not None and self._now() - self._start >= self.seconds
        if dist.is_available() and dist.is_initialized():  # every process stops at the same iteration: rank 0's
            flag = torch.tensor([1.0 if over else 0.0])
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.broadcast(flag, 0)
            over = float(flag) > 0
        if over and not runner.train_loop.stop_training:
            runner.logger.info(f"{'CPU-' if self.clock == 'cpu' else ''}time budget of {self.seconds:.0f} s used up at "
                               f"iteration {runner.iter + 1}: stopping")
            runner.train_loop.stop_training = True


def budget_schedule(cfg) -> dict:
    """A recipe's step schedule as :class:`TimeBudgetHook` arguments: a by-iteration ``MultiStepLR`` at ``m_i`` of
    ``train_cfg.max_iters`` becomes ``milestones=[m_i / max_iters]`` with its ``gamma``; ``{}`` (the rates left as
    they are) for a recipe without one, and for other schedulers, with a warning naming them.  A caller that uses
    the result also drops the recipe's ``param_scheduler``, so that the rates decay once."""
    import warnings

    scheds = cfg.get("param_scheduler") or []
    scheds = [scheds] if isinstance(scheds, dict) else list(scheds)
    max_iters = (cfg.get("train_cfg") or {}).get("max_iters")
    steps = [s for s in scheds if s.get("type") == "MultiStepLR" and not s.get("by_epoch", True)]
    if not scheds:
        return {}
    if len(steps) != 1 or len(scheds) != 1 or not max_iters:
        warnings.warn(f"schedule {[s.get('type') for s in scheds]} is not translated into the time budget (only a "
                      f"single by-iteration MultiStepLR with train_cfg.max_iters is): the rates stay constant",
                      stacklevel=2)
        return {}
    # a milestone at or past max_iters never fires in the full training either
    fractions = sorted(m / max_iters for m in steps[0]["milestones"] if 0 < m < max_iters)
    return dict(milestones=fractions, gamma=steps[0].get("gamma", 0.1)) if fractions else {}


EMA_KEY = "thkit_generator_ema"


@HOOKS.register_module()
class GeneratorEMAHook(Hook):
    """Exponential moving average of the generator's weights (SMAC/BasicSR's ``net_g_ema``), built on mmengine's
    :class:`~mmengine.model.ExponentialMovingAverage`: after every training iteration

        theta_ema <- decay * theta_ema + (1 - decay) * theta

    for the parameters of the chosen generator ``parts`` (buffers, e.g. BatchNorm statistics, follow the online
    model unless ``update_buffers``).  The averages are saved in every checkpoint (``--resume`` continues them
    exactly), swapped into the generator for validation, and :class:`ExportWeightsHook` exports them as the
    ``model`` weights (the online weights as ``model_online``), as SMAC's demo loads ``params_ema``.

    Args:
        decay: the EMA decay (SMAC: 0.995).
        parts: names of the generator's sub-modules to average (SMAC averages its ``net_g`` only, i.e.
            ``['encoder', 'compensator', 'decoder']``; the motion estimator is not averaged); None = the whole
            generator.
        update_buffers: average floating-point buffers too instead of copying them.
        begin_iter: iterations before the average starts (until then it copies the online weights).
    """

    priority = "NORMAL"  # after the optimiser step (train_step), before the checkpoint hook (VERY_LOW)

    def __init__(self, decay: float = 0.995, parts: list[str] | None = None, update_buffers: bool = False,
                 begin_iter: int = 0):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"GeneratorEMAHook: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.parts = list(parts) if parts is not None else None
        self.update_buffers = bool(update_buffers)
        self.begin_iter = int(begin_iter)
        self.averages: torch.nn.ModuleDict | None = None

    def _modules(self, runner) -> dict[str, torch.nn.Module]:
        gen = _trainer(runner).gen
        if self.parts is None:
            return {"": gen}
        missing = [p for p in self.parts if not isinstance(getattr(gen, p, None), torch.nn.Module)]
        if missing:
            have = [n for n, _ in gen.named_children()]
            raise ValueError(f"GeneratorEMAHook: the generator has no part(s) {', '.join(map(repr, missing))} "
                             f"(its parts: {', '.join(have)})")
        return {p: getattr(gen, p) for p in self.parts}

    def before_run(self, runner) -> None:
        from mmengine.model import ExponentialMovingAverage

        momentum = 1.0 - self.decay  # mmengine: avg <- (1 - momentum) * avg + momentum * theta
        self.averages = torch.nn.ModuleDict({
            key or "generator": ExponentialMovingAverage(m, momentum=momentum, update_buffers=self.update_buffers)
            for key, m in self._modules(runner).items()})

    def _pairs(self, runner):
        for key, m in self._modules(runner).items():
            yield self.averages[key or "generator"], m

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for avg, m in self._pairs(runner):
            if runner.iter + 1 <= self.begin_iter:  # not started: keep a copy of the online weights
                avg.module.load_state_dict(m.state_dict())
            else:
                avg.update_parameters(m)

    def _swap(self, runner) -> None:
        for avg, m in self._pairs(runner):
            tensors = list(m.parameters()) + (list(m.buffers()) if self.update_buffers else [])
            averaged = list(avg.module.parameters()) + (list(avg.module.buffers()) if self.update_buffers else [])
            for a, b in zip(averaged, tensors):
                tmp = a.data.clone()
                a.data.copy_(b.data)
                b.data.copy_(tmp)

    def before_val_epoch(self, runner) -> None:
        self._swap(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._swap(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[EMA_KEY] = {"decay": self.decay, "state_dict": self.averages.state_dict()}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.averages is None:
            self.before_run(runner)
        if EMA_KEY in checkpoint:
            self.averages.load_state_dict(checkpoint[EMA_KEY]["state_dict"])
        else:
            runner.logger.warning("GeneratorEMAHook: the checkpoint has no EMA weights; the average restarts "
                                  "from the loaded weights")
            for avg, m in self._pairs(runner):
                avg.module.load_state_dict(m.state_dict())

    def averaged_state_dict(self, runner) -> dict[str, torch.Tensor]:
        """The generator's state dict with the averaged parts in place of the online ones."""
        sd = dict(_trainer(runner).gen.state_dict())
        for key, avg in self.averages.items():
            prefix = "" if key == "generator" and self.parts is None else f"{key}."
            for k, v in avg.module.state_dict().items():
                sd[prefix + k] = v
        return sd


@HOOKS.register_module()
class ExportWeightsHook(Hook):
    """After training, write the generator (``model``) and discriminator weights as a thkit checkpoint
    (``work_dir/<filename>``), loadable with ``thkit build RECIPE --checkpoint FILE`` and by inference.  With a
    :class:`GeneratorEMAHook`, ``model`` holds the averaged weights and ``model_online`` the trained ones.

    Args:
        filename: file name inside the work dir.
        folder: also write a model folder (safetensors weights, recipe.json, meta.json) under this name inside
            the work dir, loadable with ``thkit.create_model(FOLDER)`` or ``--checkpoint FOLDER`` with no recipe;
            ``None`` to skip.
    """

    priority = "LOWEST"

    def __init__(self, filename: str = "weights.pth", folder: str | None = "model"):
        self.filename = filename
        self.folder = folder

    @master_only
    def after_train(self, runner) -> None:
        from thkit.checkpoint import save_checkpoint

        trainer = _trainer(runner)
        sds = {"model": trainer.gen.state_dict()}
        ema = next((h for h in runner.hooks if isinstance(h, GeneratorEMAHook) and h.averages is not None), None)
        if ema is not None:  # the averaged weights are the model (SMAC's demo loads params_ema)
            sds = {"model": ema.averaged_state_dict(runner), "model_online": sds["model"]}
        if trainer.disc is not None:
            sds["discriminator"] = trainer.disc.state_dict()
        meta = {"iteration": int(runner.iter), "experiment": str(runner.experiment_name),
                "recipe": osp.join(runner.work_dir, "recipe.py")}
        if ema is not None:
            meta["ema_decay"] = ema.decay
        size = runner.cfg.get("image_size")
        if size is not None:
            meta["image_size"] = int(size)
        path = save_checkpoint(osp.join(runner.work_dir, self.filename), sds, meta)
        runner.logger.info(f"generator weights written to {path}")
        if self.folder:
            from thkit.model_folder import save_model_folder

            recipe = {k: v for k, v in runner.cfg.to_dict().items() if not k.startswith("_")}
            folder = save_model_folder(osp.join(runner.work_dir, self.folder),
                                       {k: v for k, v in sds.items() if k in ("model", "discriminator")}, recipe,
                                       {"method": str(runner.experiment_name), **meta})
            runner.logger.info(f"model folder written to {folder} (thkit.create_model('{folder}'))")


__all__ = ["AtomicCheckpointHook", "ExportWeightsHook", "GeneratorEMAHook", "ProgressBarHook", "SampleGridHook",
           "TimeBudgetHook", "TrainRecordsHook"]

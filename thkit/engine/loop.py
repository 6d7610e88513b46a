"""An iteration-based training loop that resumes exactly and cheaply.

mmengine's ``IterBasedTrainLoop`` resumes by *loading* every batch it skips (hours for a long run) and
does not restore the random generators, so the continued run draws different random transforms than an
uninterrupted one.  :class:`ResumableIterBasedTrainLoop`:

* moves a :class:`~thkit.engine.data.ResumableInfiniteSampler` to the resume position without reading data;
* restores the generators' states saved with the checkpoint (:mod:`thkit.engine.rng`) right before the
  first resumed iteration;
* runs validation with the generators isolated, so validating never shifts the training stream;
* adds the last good checkpoint to a :class:`~thkit.engine.trainer.NonFiniteLossError`.
"""
from __future__ import annotations

import os.path as osp

from mmengine.logging import print_log
from mmengine.runner.loops import IterBasedTrainLoop, _InfiniteDataloaderIterator

from thkit.engine.rng import isolated_rng, restore_rng_state
from thkit.registry import LOOPS


def last_checkpoint(work_dir: str) -> str | None:
    """The checkpoint ``work_dir/last_checkpoint`` points at (falling back to the file of the same name in
    ``work_dir`` when the work dir was moved), or None."""
    marker = osp.join(work_dir, "last_checkpoint")
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    if path and osp.isfile(path):
        return path
    local = osp.join(work_dir, osp.basename(path)) if path else ""
    return local if local and osp.isfile(local) else None


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` with exact, data-free resume (see the module docstring).  Same arguments."""

    def _fast_forward(self) -> None:
        sampler = getattr(self.dataloader, "sampler", None)
        batch_sampler = getattr(self.dataloader, "batch_sampler", None)
        batch_size = getattr(self.dataloader, "batch_size", None)
        if hasattr(sampler, "set_start") and batch_size:
            sampler.set_start(self._iter * batch_size)
            # a fresh iterator: the old one (built with the loop) may already have prefetched from position 0
            self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
            print_log(f"resuming at iteration {self._iter}: the sampler skips {self._iter * batch_size} samples per "
                      "process without loading them", logger="current")
            return
        del batch_sampler
        print_log(f"resuming at iteration {self._iter}: loading and skipping {self._iter} batches (the sampler "
                  f"{type(sampler).__name__} cannot jump; use ResumableInfiniteSampler)", logger="current",
                  level=30)
        for _ in range(self._iter):
            next(self.dataloader_iterator)

    def run(self):
        runner = self.runner
        runner.call_hook("before_train")
        runner.call_hook("before_train_epoch")
        if self._iter > 0:
            self._fast_forward()
        state = getattr(runner, "_thkit_resume_rng", None)
        if state is not None and self._iter > 0:
            restore_rng_state(state)
            runner._thkit_resume_rng = None
        from thkit.engine.trainer import NonFiniteLossError

        while self._iter < self._max_iters and not self.stop_training:
            runner.model.train()
            data_batch = next(self.dataloader_iterator)
            try:
                self.run_iter(data_batch)
            except NonFiniteLossError as e:
                raise e.with_checkpoint(last_checkpoint(runner.work_dir)) from None
            self._decide_current_val_interval()
            if (runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                with isolated_rng():
                    runner.val_loop.run()
        runner.call_hook("after_train_epoch")
        runner.call_hook("after_train")
        return runner.model


__all__ = ["ResumableIterBasedTrainLoop", "last_checkpoint"]

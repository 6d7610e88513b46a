"""Does training learn?  Train recipes on the synthetic talking heads for a fixed budget and compare held-out
reconstruction before and after with the copy-the-source baseline.

For each recipe (default: every method's small recipe, ``fomm/small``, ``smac/small``, ``tpsmm/small``,
``mcnet/small``, ``mrfa/small``, ``mrfa/small_tps_prior``, ``dagan/small`` and ``dagan/small_spade``):

1. the synthetic dataset (``thkit.datasets.synthetic``) is written once to ``--data`` (no download);
2. ``thkit train``'s runner is built (``thkit.engine.runner.build_runner``) with the recipe's losses, optimisers and
   batch size (``--batch`` overrides it), the synthetic data, and a budget of ``--minutes``
   (:class:`~thkit.engine.hooks.TimeBudgetHook`): with ``--clock cpu`` (default) of this process's CPU time, so that
   every recipe gets the same compute however busy a shared machine is; with ``--clock wall`` of wall time.
   Recipes without some training entries get those from ``recipes/_base_/`` (runtime, the method's schedule,
   synthetic data);
   With ``--schedule`` (default) the recipe's step schedule is compressed into the budget: its ``MultiStepLR``
   milestones (iterations of ``max_iters``) become fractions of the budget at which the learning rates decay
   (``fomm/small``: x0.1 at 60 % and 90 %), so each recipe ends on its decayed rate as a full training does;
3. held-out reconstruction (FOMM's protocol: frame 0 of each *test* video is the source of all its other frames) is
   measured with :class:`thkit.metrics.pixel.L1` / :class:`~thkit.metrics.pixel.PSNR` on the initial generator, on the
   trained one, and for ``prediction = source`` (copy the source: what a model that never moves scores).

Without ``$THKIT_VGG19_WEIGHTS`` the perceptual loss uses a fixed random VGG-19 (``allow_random``).

    python benchmarks/learns.py --size 64 --threads 1 --minutes 2.5   # the README's table (2.5 CPU minutes each)
    python benchmarks/learns.py                                       # 15 CPU minutes each at 128 px
    python benchmarks/learns.py --recipes fomm/small --minutes 5 --size 64 --threads 1 --clock wall

benchmarks/README.md has the measured tables.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from mmengine.config import DictAction

ROOT = Path(__file__).resolve().parent.parent
SCHEDULES = {"fomm": "schedules/fomm_vox.py", "smac": "schedules/smac_vox.py", "tpsmm": "schedules/fomm_vox.py"}


def training_options(recipe: str, args) -> dict:
    """``--cfg-options`` that make ``recipe`` train on the synthetic data for the time budget."""
    from mmengine.config import Config

    from thkit.recipe import load_recipe

    cfg = load_recipe(recipe)
    base = ROOT / "recipes" / "_base_"
    opts: dict = {}
    synth = Config.fromfile(str(base / "datasets" / "synthetic.py"))
    method = recipe.split("/")[0]
    for part in ("runtime.py", SCHEDULES.get(method, "schedules/fomm_vox.py")):
        for k, v in Config.fromfile(str(base / part)).to_dict().items():
            if k not in cfg:
                opts[k] = v
    synth_opts = dict(videos=args.videos, frames=args.frames, seed=0)
    train = synth.synthetic_train_dataloader.to_dict()
    batch = args.batch or cfg.get("train_dataloader", {}).get("batch_size") or train["batch_size"]
    train.update(batch_size=batch, num_workers=args.workers, persistent_workers=args.workers > 0)
    train["dataset"].update(root=args.data, synth=synth_opts)
    opts["train_dataloader"] = train
    opts["val_dataloader"] = None
    opts["train_cfg.max_iters"] = 10**8
    opts["train_cfg.val_interval"] = 10**9
    opts["param_scheduler"] = []
    opts["default_hooks.checkpoint.interval"] = 10**9
    opts["default_hooks.logger.interval"] = 20
    # the recipe's attribute schedules (TPSMM's TPS dropout and background switch) are part of its training
    schedules = [h for h in cfg.get("custom_hooks", []) if h.get("type") == "PartAttributeScheduleHook"]
    # callers that build their own Namespace (benchmarks/semantic_prior.py) get the wall-time hook as before
    budget = dict(type="TimeBudgetHook", seconds=args.minutes * 60, clock=getattr(args, "clock", "wall"))
    if getattr(args, "schedule", False):
        from thkit.engine.hooks import budget_schedule

        budget.update(budget_schedule(cfg))
    opts["custom_hooks"] = [dict(type="TrainRecordsHook"), budget,
                            dict(type="SampleGridHook", interval=10**9, num_samples=4), dict(type="ExportWeightsHook"),
                            *schedules]
    if "perceptual" in cfg.get("losses", {}):
        opts["losses.perceptual.allow_random"] = True
    return opts


@torch.no_grad()
def held_out(generator, args, input_range) -> dict[str, float]:
    """L1 / PSNR of the generator and of copy-the-source on the test videos (frame 0 of each video is the
    source of its other frames)."""
    from thkit.datasets.frames import FramesDataset
    from thkit.metrics.pixel import L1, PSNR

    ds = FramesDataset(args.data, mode="reconstruction", image_size=args.size, input_range=input_range,
                       max_frames=args.eval_frames)
    metrics = {k: (L1(input_range=input_range), PSNR(input_range=input_range)) for k in ("model", "copy_source")}
    was = generator.training
    generator.eval()
    lo, hi = input_range
    # frame 0 is the source itself (copy-the-source would score a perfect, infinite-PSNR frame): left out
    keep = [i for i in range(len(ds)) if ds[i]["frame_ids"][1] != 0]
    for start in range(0, len(keep), 8):
        items = [ds[i] for i in keep[start:start + 8]]
        src = torch.stack([it["source"] for it in items])
        drv = torch.stack([it["driving"] for it in items])
        pred = generator(src, drv)["prediction"].clamp(lo, hi)
        for name, p in (("model", pred), ("copy_source", src)):
            for m in metrics[name]:
                m.update(p, drv)
    generator.train(was)
    out = {}
    for name, (l1, psnr) in metrics.items():
        out[f"{name}_l1"] = l1.compute()["value"]
        out[f"{name}_psnr"] = psnr.compute()["value"]
    out["frames"] = len(keep)
    return out


def run(recipe: str, args) -> dict:
    from thkit.engine.runner import build_runner
    from thkit.engine.trainer import unwrap

    work_dir = Path(args.work_dir) / recipe.replace("/", "_")
    opts = {**training_options(recipe, args), **args.cfg_options}
    batch = opts.get("train_dataloader.batch_size", opts["train_dataloader"]["batch_size"])
    runner = build_runner(recipe, work_dir=str(work_dir), size=args.size,  # + SMAC's token grid, perceptual scales
                          cfg_options=opts)
    trainer = unwrap(runner.model)
    (budget,) = [h for h in opts["custom_hooks"] if h["type"] == "TimeBudgetHook"]
    before = held_out(trainer.gen, args, trainer.input_range)
    t0, c0 = time.perf_counter(), time.process_time()
    runner.train()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    after = held_out(trainer.gen, args, trainer.input_range)
    print(f"{recipe}: {runner.iter} iterations of batch {batch} in {seconds:.0f} s ({cpu_seconds:.0f} CPU s); "
          f"held-out L1 {before['model_l1']:.4f} -> {after['model_l1']:.4f} (copy {after['copy_source_l1']:.4f}), "
          f"PSNR {before['model_psnr']:.2f} -> {after['model_psnr']:.2f} (copy {after['copy_source_psnr']:.2f}); "
          f"learning rates x{budget.get('gamma', 1):g} at {budget.get('milestones', [])} of the budget", flush=True)
    return dict(recipe=recipe, iterations=runner.iter, train_seconds=round(seconds, 1),
                cpu_seconds=round(cpu_seconds, 1), batch=batch,
                size=args.size, frames=after["frames"], start_l1=before["model_l1"], end_l1=after["model_l1"],
                copy_l1=after["copy_source_l1"], start_psnr=before["model_psnr"], end_psnr=after["model_psnr"],
                copy_psnr=after["copy_source_psnr"], milestones=budget.get("milestones", []),
                gamma=budget.get("gamma"), work_dir=str(work_dir))


def print_table(rows: list[dict], size: int) -> None:
    """The held-out table of ``rows`` (:func:`run`'s results)."""
    print()
    print(f"held-out reconstruction on {rows[0]['frames']} test frames ({size} px); start = initial weights, "
          f"end = after training, copy = prediction := source")
    w = max(12, *(len(r["recipe"]) for r in rows))
    head = (f"{'recipe':<{w}} {'batch':>5} {'iters':>6} {'CPU s':>6} {'wall s':>6}  {'L1 start':>8} {'L1 end':>8} "
            f"{'L1 copy':>8}  {'PSNR start':>10} {'PSNR end':>9} {'PSNR copy':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        f = lambda v: f"{v:.4f}" if math.isfinite(v) else str(v)  # noqa: E731
        g = lambda v: f"{v:.2f}" if math.isfinite(v) else str(v)  # noqa: E731
        print(f"{r['recipe']:<{w}} {r['batch']:>5} {r['iterations']:>6} {r['cpu_seconds']:>6.0f} "
              f"{r['train_seconds']:>6.0f}  {f(r['start_l1']):>8} {f(r['end_l1']):>8} {f(r['copy_l1']):>8}  "
              f"{g(r['start_psnr']):>10} {g(r['end_psnr']):>9} {g(r['copy_psnr']):>9}")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=["fomm/small", "smac/small", "tpsmm/small", "mcnet/small",
                                                   "mrfa/small", "mrfa/small_tps_prior", "dagan/small",
                                                   "dagan/small_spade"])
    p.add_argument("--minutes", type=float, default=15.0, help="training time per recipe (<= 15 in the report)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="what --minutes counts: this process's CPU time (the same compute for every recipe however "
                        "busy a shared machine is) or wall time")
    p.add_argument("--schedule", action=argparse.BooleanOptionalAction, default=True,
                   help="decay the learning rates at the recipe's MultiStepLR milestones taken as fractions of the "
                        "budget (default; --no-schedule: a constant rate, as the tables before 2026-12-05 (7th))")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=None, help="training batch (default: the recipe's)")
    p.add_argument("--videos", type=int, default=100, help="synthetic videos (10%% are held out)")
    p.add_argument("--frames", type=int, default=32, help="frames per synthetic video")
    p.add_argument("--eval-frames", type=int, default=None, help="frames per held-out video (default: all)")
    p.add_argument("--data", default=None, help="synthetic dataset folder (default data/synth<size>)")
    p.add_argument("--work-dir", default="work_dirs/learns")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--out", default=None, help="also write the results as JSON")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="recipe overrides applied to every recipe, after the benchmark's own (KEY=VALUE)")
    p.add_argument("--table", nargs="+", default=None, metavar="JSON",
                   help="only print the table of earlier --out files (runs nothing)")
    args = p.parse_args(argv)
    if args.table:
        rows = [r for path in args.table for r in json.loads(Path(path).read_text())]
        print_table(rows, rows[0]["size"])
        return rows
    args.data = args.data or f"data/synth{args.size}"
    torch.set_num_threads(args.threads)
    if not Path(args.data).exists():
        from thkit.datasets.synthetic import write_synthetic_dataset

        t = time.perf_counter()
        write_synthetic_dataset(args.data, videos=args.videos, frames=args.frames, size=args.size, seed=0)
        print(f"synthetic data written to {args.data} in {time.perf_counter() - t:.0f} s")
    rows = [run(r, args) for r in args.recipes]
    print_table(rows, args.size)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()

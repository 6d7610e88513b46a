"""Inference cost of FOMM-family recipes at 256x256 on this machine: ms/frame, GFLOP/frame, GFLOP/s, efficiency.

One "frame" is what the official demos do per driving frame: keypoints of the driving frame, relative
motion transfer (adapt scale), dense motion, generator.  Source keypoints are computed once, outside the
timed loop, as the official demos do.  Two thkit paths are measured:

* ``per-frame``: the source is re-encoded for every frame (what the official code does);
* ``cached``: the source encoder features are computed once per video (``TalkingHeadModel.encode_source``).

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products,
2 FLOP per multiply-add; grid_sample, norms and element-wise work are not counted).  In the same run, a large
plain convolution gives the machine's practical GFLOP/s ceiling; efficiency = achieved / ceiling.

    python benchmarks/inference.py                     # FOMM and TPSMM, batch 1 and 8
    python benchmarks/inference.py --recipes fomm/vox256 --batches 1 --frames 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import conv_ceiling
from torch.utils.flop_counter import FlopCounterMode

import thkit
from thkit.transfer import transfer_motion
from thkit.value_range import from_unit


def frame_fn(model, source, kp_source, kp_initial, cached):
    cache = model.encode_source(source) if cached else None

    def run(driving):
        kp_d = model.detect(driving)
        kp_norm = transfer_motion(kp_source, kp_d, kp_initial, relative=True, adapt_movement_scale=True,
                                  relative_jacobian=kp_d.get("jacobian") is not None)
        c = cache if cached else model.encode_source(source)
        return model.animate(c, kp_norm)["prediction"]

    return run


def measure(recipe: str, batch: int, frames: int, size: int) -> list[dict]:
    model = thkit.create_model(recipe, size=size)  # parts that depend on the size follow it
    lo, hi = model.meta["input_range"]
    g = torch.Generator().manual_seed(0)
    source = from_unit(torch.rand(batch, 3, size, size, generator=g), (lo, hi))
    drivings = [from_unit(torch.rand(batch, 3, size, size, generator=g), (lo, hi)) for _ in range(frames + 1)]
    rows = []
    with torch.inference_mode():
        kp_source = model.detect(source)
        kp_initial = model.detect(drivings[0])
        for cached in (False, True):
            run = frame_fn(model, source, kp_source, kp_initial, cached)
            with FlopCounterMode(display=False) as fc:
                run(drivings[0])
            gflop = fc.get_total_flops() / 1e9 / batch
            run(drivings[0])  # warm-up
            times = []
            for d in drivings[1:]:
                t0 = time.perf_counter()
                run(d)
                times.append((time.perf_counter() - t0) / batch)
            ms = statistics.median(times) * 1000
            rows.append(dict(recipe=recipe, batch=batch, path="cached" if cached else "per-frame", ms=ms,
                             gflop=gflop, gflops=gflop / (ms / 1000)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["fomm/vox256", "tpsmm/vox256"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--frames", type=int, default=6, help="timed frames per configuration (median reported)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ceiling = conv_ceiling()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; plain-conv ceiling: {ceiling:.1f} GFLOP/s")
    print(f"{'recipe':<16}{'batch':>6} {'path':<10}{'ms/frame':>10}"
          f"{'GFLOP/frame':>13}{'GFLOP/s':>10}{'efficiency':>12}")
    for recipe in args.recipes:
        for b in args.batches:
            for r in measure(recipe, b, args.frames, args.size):
                print(f"{r['recipe']:<16}{r['batch']:>6} {r['path']:<10}{r['ms']:>10.1f}{r['gflop']:>13.1f}"
                      f"{r['gflops']:>10.1f}{r['gflops'] / ceiling:>11.0%}")
    ceiling2 = conv_ceiling()
    print(f"plain-conv ceiling after the run: {ceiling2:.1f} GFLOP/s (a large change means the machine was busy)")


if __name__ == "__main__":
    main()

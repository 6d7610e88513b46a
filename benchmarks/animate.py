"""Frames per second of the plain per-frame path vs the streaming cached path of ``thkit animate``.

* ``per-frame``: what the official demos do per driving frame: keypoints of the driving frame, relative motion
  transfer (:func:`thkit.transfer.transfer_motion`, hull areas recomputed every frame), the full forward pass
  with the source re-encoded (:class:`thkit.inference.stream.PerFrameAnimator`).
* ``streaming``: :class:`thkit.inference.stream.StreamingAnimator`: source keypoints, encoder features and
  source-only motion inputs once per video (that time is counted), motion-transfer state once, driving frames
  in batches of each ``--batch-sizes`` value.

All paths run on the same random frames (the cost does not depend on the content) with random weights, after a
warm-up, in one process, **interleaved** chunk by chunk (the order rotating), so that a shared machine's
changing load hits them alike.  Each streaming output is checked against the per-frame output (max |diff|).
With ``--io`` the whole ``animate_video`` pipeline (decode, resize, model, encode in three threads) is also
timed on a generated mp4 (not interleaved).

    python benchmarks/animate.py                                  # fomm/vox256 and smac/vox256 at 256x256
    python benchmarks/animate.py --recipes fomm/vox256 --frames 16 --batch-sizes 1 8 --io
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch
from _common import load_average, random_frames

import thkit
from thkit.inference.animate import motion_settings
from thkit.inference.stream import PerFrameAnimator, StreamingAnimator


def measure(recipe: str, frames: int, size: int, batch_sizes: list[int], io: bool) -> dict:
    torch.manual_seed(0)
    model = thkit.create_model(recipe, size=size)  # parts that depend on the size follow it
    cfg = model.recipe
    mt = motion_settings(cfg)
    lo, hi = (float(v) for v in model.input_range)
    chunk = math.lcm(*batch_sizes)
    frames = max(chunk, frames // chunk * chunk)
    src, drv = random_frames(frames + chunk, size, lo, hi)
    warm, drv = drv[:chunk], drv[chunk:]

    plain = PerFrameAnimator(model, **mt)
    streams = {b: StreamingAnimator(model, batch_size=b, **mt) for b in batch_sizes}
    # warm-up (allocator, oneDNN kernels), then a fresh video for the timed run
    plain.set_source(src)
    [plain.step(f) for f in warm]
    for a in streams.values():
        a.set_source(src)
        list(a.run(warm))

    times = {"per-frame": 0.0, **{b: 0.0 for b in batch_sizes}}
    outs: dict = {k: [] for k in times}
    t0 = time.perf_counter()
    plain.set_source(src)
    times["per-frame"] += time.perf_counter() - t0
    for b, a in streams.items():
        t0 = time.perf_counter()
        a.set_source(src)  # once per video: counted
        times[b] += time.perf_counter() - t0
    order = ["per-frame", *batch_sizes]
    for k, start in enumerate(range(0, frames, chunk)):
        part = drv[start:start + chunk]
        for key in order[k % len(order):] + order[:k % len(order)]:
            t0 = time.perf_counter()
            if key == "per-frame":
                outs[key] += [plain.step(f) for f in part]
            else:
                outs[key] += list(streams[key].run(part))
            times[key] += time.perf_counter() - t0
    ref = outs["per-frame"]
    row = dict(recipe=recipe, frames=frames, fps={k: frames / t for k, t in times.items()},
               err={b: max(float((x - y).abs().max()) for x, y in zip(ref, outs[b])) for b in batch_sizes})
    if io:
        row["io"] = _measure_io(model, mt, frames, size, max(batch_sizes, key=lambda b: row["fps"][b]))
    return row


def _measure_io(model, mt, frames: int, size: int, batch_size: int) -> tuple[int, float]:
    import numpy as np

    from thkit.inference.animate import animate_video
    from thkit.inference.video import VideoWriter

    with tempfile.TemporaryDirectory() as tmp:
        drv_path = os.path.join(tmp, "driving.mp4")
        yy, xx = np.mgrid[:size, :size]
        with VideoWriter(drv_path, 25, size, size) as w:
            for i in range(frames):  # a moving blob, a cheap video to decode like a real one
                blob = np.exp(-((xx - size / 2 - 3 * i) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 6) ** 2))
                w.write(np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8))
        src = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        res = animate_video(model, src, drv_path, os.path.join(tmp, "out.mp4"), image_size=size,
                            input_range=tuple(model.input_range), batch_size=batch_size, progress=False, **mt)
        return batch_size, res.fps_compute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["fomm/vox256", "smac/vox256"])
    ap.add_argument("--frames", type=int, default=8, help="timed driving frames per path")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4], help="streaming batch sizes")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--io", action="store_true", help="also time the full animate pipeline (decode/encode threads)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = load_average()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; {args.size}x{args.size}, {args.frames} frames per path, interleaved")
    head = f"{'recipe':<14}{'per-frame fps':>14}" + "".join(
        f"{f'stream b{b} fps':>16}{'ratio':>8}" for b in args.batch_sizes
    )
    head += f"{'max |diff|':>11}" + (f"{'animate+I/O fps':>18}" if args.io else "")
    print(head)
    for r in args.recipes:
        row = measure(r, args.frames, args.size, args.batch_sizes, args.io)
        f = row["fps"]
        line = f"{row['recipe']:<14}{f['per-frame']:>14.3f}"
        line += "".join(f"{f[b]:>16.3f}{f[b] / f['per-frame']:>7.2f}x" for b in args.batch_sizes)
        line += f"{max(row['err'].values()):>11.1e}"
        if args.io:
            b, fps = row["io"]
            line += f"{fps:>12.3f} (b{b})"
        print(line, flush=True)
    load = load_average()
    print(f"load average after the run: {load:.1f} (this machine is shared; a high load slows every path)")


if __name__ == "__main__":
    main()

"""Frames per second of the plain per-frame path vs the streaming cached path of ``thkit animate``.

* ``per-frame``: what the official demos do per driving frame: keypoints of the driving frame, relative motion
  transfer (:func:`thkit.transfer.transfer_motion`, hull areas recomputed every frame), the full forward pass
  with the source re-encoded (:func:`thkit.inference.stream.animate_per_frame`).
* ``streaming``: :class:`thkit.inference.stream.StreamingAnimator`: source keypoints, encoder features and
  source-only motion inputs once per video, motion-transfer state once, driving frames in batches.

Both run on the same random frames (the cost does not depend on the content) with random weights, after a
warm-up, in the same process; the streaming output is checked against the per-frame output.  With
``--io`` the whole ``animate_video`` pipeline (decode, resize, model, encode in three threads) is also timed
on a generated mp4.

    python benchmarks/animate.py                                  # fomm/vox256 and smac/vox256 at 256x256
    python benchmarks/animate.py --recipes fomm/vox256 --frames 16 --batch-size 8 --io
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from thkit.builder import build_model
from thkit.inference.animate import motion_settings
from thkit.inference.stream import StreamingAnimator, animate_per_frame
from thkit.recipe import load_recipe


def _frames(n: int, size: int, lo: float, hi: float, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(3, size, size, generator=g) * (hi - lo) + lo
    return src, [torch.rand(3, size, size, generator=g) * (hi - lo) + lo for _ in range(n)]


def measure(recipe: str, frames: int, size: int, batch_size: int, io: bool) -> dict:
    cfg = load_recipe(recipe)
    torch.manual_seed(0)
    model = build_model(cfg.model.to_dict()).eval()
    mt = motion_settings(cfg)
    lo, hi = (float(v) for v in model.input_range)
    src, drv = _frames(frames, size, lo, hi)
    # warm-up both paths (allocator, oneDNN kernels)
    animate_per_frame(model, src, drv[:1], **mt)
    warm = StreamingAnimator(model, batch_size=batch_size, **mt)
    warm.set_source(src)
    list(warm.run(drv[:batch_size]))

    t0 = time.perf_counter()
    ref = animate_per_frame(model, src, drv, **mt)
    t_plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    anim = StreamingAnimator(model, batch_size=batch_size, **mt)
    anim.set_source(src)  # counted: once per video
    got = list(anim.run(drv))
    t_stream = time.perf_counter() - t0
    err = max(float((a - b).abs().max()) for a, b in zip(ref, got))
    row = dict(recipe=recipe, frames=frames, plain=frames / t_plain, stream=frames / t_stream, err=err)
    if io:
        row["io"] = _measure_io(model, cfg, mt, frames, size, batch_size)
    return row


def _measure_io(model, cfg, mt, frames: int, size: int, batch_size: int) -> float:
    import numpy as np

    from thkit.inference.animate import animate_video
    from thkit.inference.video import VideoWriter

    with tempfile.TemporaryDirectory() as tmp:
        drv_path = os.path.join(tmp, "driving.mp4")
        rng = np.random.default_rng(0)
        with VideoWriter(drv_path, 25, size, size) as w:
            for _ in range(frames):
                w.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        src = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        res = animate_video(model, src, drv_path, os.path.join(tmp, "out.mp4"), image_size=size,
                            input_range=tuple(model.input_range), batch_size=batch_size, progress=False,
                            relative=mt["relative"], relative_jacobian=mt["relative_jacobian"],
                            adapt_movement_scale=mt["adapt_movement_scale"])
        return res.fps_compute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["fomm/vox256", "smac/vox256"])
    ap.add_argument("--frames", type=int, default=8, help="timed driving frames per path")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4, help="streaming batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--io", action="store_true", help="also time the full animate pipeline (decode/encode threads)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; {args.size}x{args.size}, {args.frames} frames, streaming batch {args.batch_size}")
    head = f"{'recipe':<16}{'per-frame fps':>15}{'streaming fps':>15}{'ratio':>8}{'max |diff|':>12}"
    if args.io:
        head += f"{'animate (I/O) fps':>19}"
    print(head)
    for r in args.recipes:
        row = measure(r, args.frames, args.size, args.batch_size, args.io)
        line = (f"{row['recipe']:<16}{row['plain']:>15.3f}{row['stream']:>15.3f}{row['stream'] / row['plain']:>7.2f}x"
                f"{row['err']:>12.1e}")
        if args.io:
            line += f"{row['io']:>19.3f}"
        print(line, flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after the run: {load:.1f} (this machine is shared; a high load slows both paths)")


if __name__ == "__main__":
    main()

"""The exact fast path, lever by lever: frames/s of each lever against the reference path, interleaved.

* ``reference``: the official computation order, eager fp32, one frame at a time with the source re-encoded
  (:class:`thkit.inference.stream.PerFrameAnimator` inside :func:`thkit.layers.blocks.reference_ops`: every
  inference shortcut off);
* ``stream``: the streaming path at batch 1 (source keypoints, encoder features and source-only motion inputs
  once per video, :class:`~thkit.inference.stream.StreamingAnimator`), shortcuts still off;
* then ``stream`` plus one lever at a time: ``+code_cache`` (SMAC's retrieval transformers reuse the codes'
  key/value projections), ``+inplace`` (activations and residual sums written into fresh intermediates),
  ``+fold_bn`` (eval BatchNorms folded into the convolution before them, :func:`thkit.layers.blocks.fold_batchnorm`),
  ``+channels_last`` (weights and activations in NHWC for oneDNN);
* ``fast``: the levers that are kept together (``--fast``, default code_cache, inplace, fold_bn);
* with ``--compile``, ``compiled``: ``fast`` with ``model.animate`` and ``model.detect`` under ``torch.compile``
  (inductor); its start-up (the first frame, compilation included) is printed beside its per-frame speed;
* with ``--torchscript``, ``torchscript``: ``fast`` with ``model.animate`` traced once per video (the source cache
  baked in as constants), ``torch.jit.freeze`` and ``torch.jit.optimize_for_inference`` (oneDNN conv fusion and
  weight prepacking); the trace is redone for every new source (in the first frame of a video).

All paths see the same random frames with the same random weights (random BatchNorm statistics, so that folding
is not a no-op), after one warm-up frame each, in one process, interleaved frame by frame with the order rotating
(a shared machine's load hits them alike).  ``fps`` and ``vs ref`` count the whole video in wall time (the
streaming paths' per-video source encoding included); ``median`` compares median wall times per frame; ``cpu``
compares median CPU times of the process per frame (``time.process_time``), which other processes on a shared
machine move least (with one thread it is the work done; with more it also counts threads waiting for each
other).  Each output is compared with the reference (max |diff|; the exact-path target is 1e-4).

    python benchmarks/levers.py --recipes smac/vox256 --size 128 --frames 6 --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time

import torch
from _common import random_bn_model, random_frames

from thkit.inference.animate import motion_settings
from thkit.inference.stream import PerFrameAnimator, StreamingAnimator
from thkit.layers.blocks import fold_batchnorm, reference_ops

LEVERS = ("code_cache", "inplace", "fold_bn", "channels_last")


class Path:
    """One way to animate: an animator, the shortcuts it runs with, how its frames are laid out."""

    def __init__(self, name, animator, shortcuts=(), channels_last=False):
        self.name, self.animator, self.shortcuts, self.channels_last = name, animator, set(shortcuts), channels_last
        self.seconds, self.outputs, self.startup, self.frame_seconds, self.frame_cpu = 0.0, [], None, [], []

    def _ops(self):
        return reference_ops(*(n for n in ("code_cache", "inplace") if n not in self.shortcuts)) \
            if {"code_cache", "inplace"} - self.shortcuts else contextlib.nullcontext()

    def _frame(self, f):
        return f.contiguous(memory_format=torch.channels_last) if self.channels_last else f

    def set_source(self, src):
        with self._ops():
            self.animator.set_source(self._frame(src.unsqueeze(0))[0] if self.channels_last else src)

    def step(self, f):
        with self._ops():
            if isinstance(self.animator, PerFrameAnimator):
                return self.animator.step(f)
            return self.animator.step(self._frame(f.unsqueeze(0)))[0]


class _Frame(torch.nn.Module):
    """``animate(cache, kp)['prediction']`` of one source cache, as a module of keypoint tensors (for tracing)."""

    def __init__(self, model, animate, cache, keys):
        super().__init__()
        self.model, self.animate, self.cache, self.keys = model, animate, cache, keys

    def forward(self, *kp):
        return self.animate(self.cache, dict(zip(self.keys, kp)))["prediction"]


class _Traced:
    """``model.animate`` through a TorchScript graph traced, frozen and optimised for each new source cache."""

    def __init__(self, model):
        self.model, self.animate, self.cache, self.graph, self.keys = model, model.animate, None, None, None

    def __call__(self, cache, kp, driving=None):
        if cache is not self.cache:
            self.keys = sorted(kp)
            frame = _Frame(self.model, self.animate, cache, self.keys).eval()
            graph = torch.jit.trace(frame, tuple(kp[k] for k in self.keys), strict=False, check_trace=False)
            self.graph, self.cache = torch.jit.optimize_for_inference(torch.jit.freeze(graph)), cache
        return {"prediction": self.graph(*(kp[k] for k in self.keys))}


def build_paths(model, mt, levers, fast, compile_, torchscript=False):
    paths = [Path("reference", PerFrameAnimator(model, **mt)),
             Path("stream", StreamingAnimator(model, batch_size=1, **mt))]
    has_codes = any(hasattr(m, "cache_codes") for m in model.modules())

    def variant(names):
        m = model
        if "fold_bn" in names or "channels_last" in names:
            m = copy.deepcopy(model)
            if "fold_bn" in names:
                fold_batchnorm(m)
            if "channels_last" in names:
                m = m.to(memory_format=torch.channels_last)
        return m

    for lever in levers:
        if lever == "code_cache" and not has_codes:
            continue
        m = variant({lever})
        paths.append(Path(f"+{lever}", StreamingAnimator(m, batch_size=1, **mt), {lever},
                          channels_last=lever == "channels_last"))
    fm = variant(set(fast))
    paths.append(Path("fast", StreamingAnimator(fm, batch_size=1, **mt), set(fast),
                      channels_last="channels_last" in fast))
    if compile_:
        cm = variant(set(fast))
        cm.animate = torch.compile(cm.animate)
        cm.detect = torch.compile(cm.detect)
        paths.append(Path("compiled", StreamingAnimator(cm, batch_size=1, **mt), set(fast),
                          channels_last="channels_last" in fast))
    if torchscript:
        tm = variant(set(fast))
        if tm is model:
            tm = copy.deepcopy(model)
        tm.animate = _Traced(tm)
        paths.append(Path("torchscript", StreamingAnimator(tm, batch_size=1, **mt), set(fast),
                          channels_last="channels_last" in fast))
    return paths


def measure(recipe, size, frames, levers, fast, compile_, torchscript=False):
    model = random_bn_model(recipe, size)
    mt = motion_settings(model.recipe)
    src, drv = random_frames(frames + 1, size, *(float(v) for v in model.input_range))
    paths = build_paths(model, mt, levers, fast, compile_, torchscript)
    for p in paths:  # warm-up frame (the compiled path compiles here: its start-up)
        t0 = time.perf_counter()
        p.set_source(src)
        p.step(drv[0])
        p.startup = time.perf_counter() - t0
        p.set_source(src)  # a fresh video: the per-video source encoding is counted below
    for p in paths:
        t0 = time.perf_counter()
        p.set_source(src)
        p.seconds += time.perf_counter() - t0
    for k, f in enumerate(drv[1:]):
        for p in paths[k % len(paths):] + paths[:k % len(paths)]:
            t0, c0 = time.perf_counter(), time.process_time()
            p.outputs.append(p.step(f))
            dt = time.perf_counter() - t0
            p.frame_cpu.append(time.process_time() - c0)
            p.seconds += dt
            p.frame_seconds.append(dt)
    ref, stream = paths[0], paths[1]
    rows = []
    for p in paths:
        err = max(float((a - b).abs().max()) for a, b in zip(ref.outputs, p.outputs))
        med, cpu = statistics.median(p.frame_seconds), statistics.median(p.frame_cpu)
        rows.append((p.name, frames / p.seconds, ref.seconds / p.seconds, statistics.median(ref.frame_seconds) / med,
                     statistics.median(ref.frame_cpu) / cpu, statistics.median(stream.frame_cpu) / cpu, err,
                     p.startup))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["smac/vox256", "fomm/vox256", "tpsmm/vox256"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=6, help="timed driving frames per path")
    ap.add_argument("--levers", nargs="*", default=list(LEVERS), choices=LEVERS)
    ap.add_argument("--fast", nargs="*", default=["code_cache", "inplace", "fold_bn"], choices=LEVERS,
                    help="the levers the fast path keeps")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the fast path")
    ap.add_argument("--torchscript", action="store_true", help="also time a traced, frozen TorchScript graph")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{load:.1f}; {args.size}x{args.size}, {args.frames} frames per path, interleaved; fast = "
          f"{' + '.join(args.fast) or 'stream'}")
    print(f"{'recipe':<18}{'path':<16}{'fps':>8}{'vs ref':>8}{'median':>8}{'cpu: vs ref':>12}"
          f"{'vs stream':>10}{'max |diff|':>11}{'1st frame s':>12}")
    for r in args.recipes:
        rows = measure(r, args.size, args.frames, args.levers, args.fast, args.compile, args.torchscript)
        for name, fps, vs_ref, med_ref, cpu_ref, cpu_stream, err, startup in rows:
            print(f"{r:<18}{name:<16}{fps:>8.3f}{vs_ref:>7.2f}x{med_ref:>7.2f}x{cpu_ref:>11.2f}x{cpu_stream:>9.2f}x"
                  f"{err:>11.1e}{startup:>12.2f}", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after the run: {load:.1f}")


if __name__ == "__main__":
    main()

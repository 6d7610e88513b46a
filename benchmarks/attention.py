"""Time and peak memory of every available attention backend, side by side, at SMAC retrieval sizes.

SMAC's retrieval transformer works on a 32×32 = 1024-token grid with 8 heads: width 256 (appearance,
head dim 32) and 32 (motion, head dim 4).  Each layer runs a self-attention (1024 × 1024, the first
appearance layer with a key-padding mask) and a cross-attention to 256 / 512 / 768 / 1024 codes.  This
script times each backend on exactly those shapes in one run (CPU: sdpa vs math; with CUDA also
xformers when it works) and reports::

    case | <backend>: median ms, peak MiB | ... | max |out - math|

Peak memory is what the call allocates on top of its inputs: on CUDA ``torch.cuda.max_memory_allocated``;
on CPU the process's resident high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``,
with glibc told to return large blocks to the OS at once so freed buffers do not hide the peak).

    PYTHONPATH=. python benchmarks/attention.py                  # forward, batch 1, 1 thread
    PYTHONPATH=. python benchmarks/attention.py --backward --batch 2 --threads 2
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from thkit.attention import attention, get_backend, registered_backends, resolve_backend  # noqa: E402


class CpuPeak:
    """Resident-memory high-water mark of this process (Linux); ``None`` where it cannot be measured."""

    def __init__(self) -> None:
        self.ok = False
        try:
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: big blocks are mmapped, freed at once
            self.libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
            self._reset()
            self._read("VmHWM")
            self.ok = True
        except Exception:  # noqa: BLE001 - not Linux / glibc: no CPU memory column
            pass

    @staticmethod
    def _read(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def _reset(self) -> None:
        self.libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def start(self) -> int:
        self._reset()
        return self._read("VmRSS")

    def peak(self, base: int) -> float:
        return (self._read("VmHWM") - base) / 2**20


def measure(fn, device: torch.device, repeats: int, warmup: int, cpu_peak: CpuPeak):
    """(median ms, peak MiB or None, last output)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    del out
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        sync()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    elif cpu_peak.ok:
        base = cpu_peak.start()
        out = fn()
        peak = cpu_peak.peak(base)
    else:
        out, peak = fn(), None
    return statistics.median(times), peak, out


def cases(args):
    """(label, M, N, dim, with key-padding mask)."""
    t = args.tokens
    for dim in args.dims:
        yield f"self  E={dim:<3d} {t}x{t}", t, t, dim, False
        yield f"self+pad E={dim:<3d} {t}x{t}", t, t, dim, True
        for k in args.codes:
            yield f"cross E={dim:<3d} {t}x{k}", t, k, dim, False


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=1024, help="query tokens (SMAC: 32x32 = 1024)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dims", type=int, nargs="+", default=[256, 32], help="model widths (SMAC: 256 app, 32 motion)")
    p.add_argument("--codes", type=int, nargs="+", default=[256, 512, 768, 1024], help="codebook subset sizes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backward", action="store_true", help="time forward + backward instead of forward only")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    probe = torch.empty(1, device=device)
    backends = [n for n in registered_backends() if n != "auto"]
    usable = [n for n in backends if get_backend(n).available() and get_backend(n).supports(probe)]
    print(f"torch {torch.__version__}, device {device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else f', {args.threads} thread(s)'}, "
          f"{args.dtype}, batch {args.batch}, {args.heads} heads, {'forward+backward' if args.backward else 'forward'}")
    for n in backends:
        b = get_backend(n)
        print(f"  {n:9s} {'used' if n in usable else 'skipped'}: {b.reason()}")
    print(f"  auto picks {resolve_backend('auto', probe)!r} here")
    cpu_peak = CpuPeak()
    if device.type == "cpu" and not cpu_peak.ok:
        print("  (CPU peak memory not measurable on this system)")

    head = f"{'case':26s}" + "".join(f" | {n + ' ms':>12s} {'MiB':>7s}" for n in usable) + " | max|d| vs math"
    print("\n" + head + "\n" + "-" * len(head))
    g = torch.Generator(device="cpu").manual_seed(0)
    for label, M, N, dim, pad in cases(args):
        H, D = args.heads, dim // args.heads
        q = torch.randn(args.batch, M, H, D, generator=g).to(device, dtype)
        k = torch.randn(args.batch, N, H, D, generator=g).to(device, dtype)
        v = torch.randn(args.batch, N, H, D, generator=g).to(device, dtype)
        kpm = None
        if pad:
            kpm = torch.rand(args.batch, N, generator=g) < 0.2
            kpm = kpm.to(device)
        if args.backward:
            q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
        row, outs = f"{label:26s}", {}
        for name in usable:
            def fn(name=name, q=q, k=k, v=v, kpm=kpm):
                if args.backward:
                    out = attention(q, k, v, key_padding_mask=kpm, backend=name)
                    out.sum().backward()
                    q.grad = k.grad = v.grad = None
                    return out.detach()
                with torch.no_grad():
                    return attention(q, k, v, key_padding_mask=kpm, backend=name)

            ms, mib, out = measure(fn, device, args.repeats, args.warmup, cpu_peak)
            outs[name] = out.float()
            row += f" | {ms:12.2f} {f'{mib:7.1f}' if mib is not None else '    n/a'}"
        if "math" in outs:
            diff = max((o - outs["math"]).abs().max().item() for o in outs.values())
            row += f" | {diff:.2e}"
        print(row, flush=True)
        del q, k, v, outs


if __name__ == "__main__":
    main()

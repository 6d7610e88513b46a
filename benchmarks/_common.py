"""What the benchmark scripts share: the plain-convolution GFLOP/s ceiling, random frames, the machine's load and
peak memory, one way of driving a path's animator.  Imported as ``from _common import ...`` (the scripts run as
``python benchmarks/<name>.py``)."""
from __future__ import annotations

import contextlib
import os
import re
import time

import torch

from thkit.value_range import from_unit


def conv_ceiling(repeats: int = 5, dtype: torch.dtype | None = None) -> float:
    """GFLOP/s of a large 3x3 convolution (256 -> 256 channels at 64x64, batch 4): the machine's practical ceiling
    for the convolutions these models are made of; ``dtype``: under CPU ``torch.autocast`` in that dtype."""
    import contextlib

    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval()
    x = torch.randn(4, 256, 64, 64)
    flops = 2 * 4 * 256 * 256 * 9 * 64 * 64
    cast = contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)
    with torch.inference_mode(), cast:
        conv(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9


def random_frames(n: int, size: int, lo: float, hi: float, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A random source ``(3, size, size)`` and ``n`` random driving frames in ``[lo, hi]`` (the cost of these models
    does not depend on the content)."""
    g = torch.Generator().manual_seed(seed)
    src = from_unit(torch.rand(3, size, size, generator=g), (lo, hi))
    return src, [from_unit(torch.rand(3, size, size, generator=g), (lo, hi)) for _ in range(n)]


def random_bn_model(recipe: str, size: int, seed: int = 0) -> torch.nn.Module:
    """``recipe`` at ``size`` with random weights (seed ``seed``) and random BatchNorm statistics, so that folding
    BatchNorm into the convolution before it is not a no-op."""
    import thkit

    torch.manual_seed(seed)
    model = thkit.create_model(recipe, size=size)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none): this machine is shared, a high load slows every path."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (Linux ``/proc/self/clear_refs``); False where that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """The process's peak resident memory since start or the last :func:`reset_peak_rss` (MiB; Linux ``VmHWM``,
    else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnimatorPath:
    """One way of animating, as the scripts time it: ``start(source (C, H, W))`` once per video, ``step(frame (C, H,
    W)) -> (C, H, W)``.  A :class:`~thkit.inference.stream.PerFrameAnimator` is the reference path and computes in the
    official order (inside :func:`thkit.layers.blocks.reference_ops`: no inference shortcut); a
    :class:`~thkit.inference.stream.StreamingAnimator` runs as it is, at batch 1."""

    def __init__(self, name: str, animator):
        from thkit.inference.stream import PerFrameAnimator

        self.name, self.animator = name, animator
        self.reference = isinstance(animator, PerFrameAnimator)

    def _ops(self):
        from thkit.layers.blocks import reference_ops

        return reference_ops() if self.reference else contextlib.nullcontext()

    def start(self, source: torch.Tensor) -> None:
        with self._ops():
            self.animator.set_source(source)  # both animators take a (C, H, W) source

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        with self._ops():
            return self.animator.step(frame) if self.reference else self.animator.step(frame.unsqueeze(0))[0]

"""benchmarks/semantic_prior.py's detector-free meter: inverting a backward flow at given source points."""
from __future__ import annotations

import importlib.util

import numpy as np
import torch
from conftest import ROOT


def _bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    path = ROOT / "benchmarks" / "semantic_prior.py"
    spec = importlib.util.spec_from_file_location("thkit_bench_semantic_prior", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_invert_flow_at_recovers_an_affine_warp(monkeypatch):
    bench = _bench(monkeypatch)
    size = 64
    # backward flow of an affine warp: output pixel q samples the source at A q + b (pixels)
    a = np.array([[1.08, 0.06], [-0.04, 0.93]])
    b = np.array([-2.5, 3.0])
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    q = np.stack([xs, ys], -1).astype(np.float64)
    src = q @ a.T + b
    grid = torch.tensor(src / ((size - 1) / 2) - 1)[None].float()  # (1, H, W, 2), normalised, align_corners=True
    points = np.array([[20.3, 31.7], [40.9, 22.2], [33.0, 45.5]])
    want = (points - b) @ np.linalg.inv(a).T  # the output pixels that sample those source points
    got = bench.invert_flow_at(grid, points)[0]
    assert np.abs(got - want).max() < 1e-3  # sub-pixel: the Newton step on a linear flow is exact (float32 grid)

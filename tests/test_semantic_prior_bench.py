"""benchmarks/semantic_prior.py's detector-free meters: a backward flow inverted at source points, the lip gap."""
from __future__ import annotations

import numpy as np
import torch
from conftest import load_benchmark


def _bench(monkeypatch):
    return load_benchmark("semantic_prior", monkeypatch)


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


def test_lip_gap_meter_reads_a_true_opening_in_head_units(monkeypatch):
    """The landmark meter of part e on the renderer's own landmarks: raising ``mouth_open`` by 0.5 opens the lips by
    the template basis's 0.075 head units (the renderer's mouth_open_max is sampled per identity, 0.13 by default)."""
    import thkit

    bench = _bench(monkeypatch)
    model = thkit.create_model("semantic_prior/small", size=64)  # only its recipe (template, anchors) is used
    _, motion = bench._render(90, 3)
    motion.mouth_open = np.zeros_like(motion.mouth_open)
    from thkit.datasets.synthetic import HeadIdentity, HeadRenderer

    identity = HeadIdentity.sample(np.random.default_rng([0, 2, 90]))
    closed = HeadRenderer(64).render(identity, motion)["landmarks"]
    motion.mouth_open = np.full_like(motion.mouth_open, 0.5)
    opened = HeadRenderer(64).render(identity, motion)["landmarks"]
    change = bench._lip_gap_landmarks(model, opened) - bench._lip_gap_landmarks(model, closed)
    assert np.all(np.abs(change - 0.5 * identity.mouth_open_max) < 0.015), change
    assert np.all(change > 0.05)
    # the recipe switch the benchmark uses: realise on the keypoints or as a warp, the outline added for the latter
    warp = bench.with_realise(model.recipe, "warp")["control"]
    assert warp["realise"] == "warp" and warp["outline"]["radii"] == (0.75, 1.0)
    assert "outline" not in bench.with_realise(model.recipe, "keypoints")["control"]

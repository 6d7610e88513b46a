"""``benchmarks/learns.py`` (does training learn?) for a few steps: both small recipes train on the synthetic
heads and are measured on held-out videos before and after, against copy-the-source."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


def _learns():
    spec = importlib.util.spec_from_file_location("thkit_bench_learns", ROOT / "benchmarks" / "learns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learns_benchmark_a_few_steps(tmp_path):
    out = tmp_path / "rows.json"
    rows = _learns().main(["--recipes", "fomm/small", "smac/small", "--size", "64", "--videos", "10", "--frames", "6",
                           "--eval-frames", "3", "--batch", "2", "--threads", "1", "--data", str(tmp_path / "synth"),
                           "--work-dir", str(tmp_path / "work"), "--out", str(out),
                           "--cfg-options", "train_cfg.max_iters=2"])
    assert json.loads(out.read_text()) == rows
    assert [r["recipe"] for r in rows] == ["fomm/small", "smac/small"]
    for r in rows:
        assert r["iterations"] == 2 and r["frames"] == 2  # one held-out video, frames 1 and 2 (frame 0 = source)
        values = [r[k] for k in ("start_l1", "end_l1", "copy_l1", "start_psnr", "end_psnr", "copy_psnr")]
        assert all(math.isfinite(v) for v in values), r
        assert 0 < r["copy_l1"] < r["start_l1"]  # an untrained generator is worse than copying the source
        assert r["end_l1"] != r["start_l1"]  # two steps changed the weights
        assert (tmp_path / "work" / r["recipe"].replace("/", "_") / "weights.pth").is_file()

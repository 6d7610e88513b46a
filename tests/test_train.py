"""``thkit train``: training on mmengine's Runner (fomm/small at 64 px on the synthetic talking heads).

Covers the training step (two optimisers, every loss logged), exact resume, the non-finite guard, crash-safe
checkpoints, two-process DDP with gloo on the CPU, and bf16 autocast on the CPU.  Runs use one thread per
process: with two threads on a busy 2-core machine torch spends most of its time waiting.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli
from mmengine.hooks import Hook

from thkit.engine.hooks import EMA_KEY
from thkit.registry import HOOKS, LOSSES

SYNTH = dict(videos=6, frames=8, seed=0)
G_TERMS = ("pixel", "perceptual", "equivariance_value", "equivariance_jacobian", "adversarial_gan",
           "adversarial_feature_matching", "loss_g")
# fomm/small trains without a GAN (CPU-sized); the tests add FOMM vox-adv's LSGAN to cover the two-optimiser step
GAN = dict(_delete_=True, type="LSGANLoss", weight=1.0, discriminator_weight=1.0, feature_matching=[10.0] * 4)
D_TERMS = ("d_adversarial_gan", "loss_d")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> str:
    from thkit.datasets.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "heads64"
    write_synthetic_dataset(root, size=64, progress=False, **SYNTH)
    return str(root)


def small_options(root: str, **extra) -> dict:
    """fomm/small at 64 px on the small synthetic set; the perceptual loss stops at relu3_1 (speed)."""
    opts = {
        "image_size": 64,
        "losses.perceptual.scales": [1, 0.5, 0.25],
        "losses.perceptual.layer_weights": [10, 10, 10],
        "losses.adversarial": dict(GAN),
        "train_dataloader.batch_size": 2,
        "train_dataloader.num_workers": 0,
        "train_dataloader.dataset.root": root,
        "train_dataloader.dataset.synth": dict(SYNTH),
        "val_dataloader.dataset.root": root,
        "val_dataloader.dataset.synth": dict(SYNTH),
        "val_dataloader.dataset.max_frames": 4,
        "default_hooks.logger.interval": 1,
        "custom_hooks": [dict(type="TrainRecordsHook", plot=False)],
    }
    opts.update(extra)
    return opts


def cli_options(opts: dict, prefix: str = "") -> list[str]:
    """``--cfg-options`` strings (nested dicts as dotted keys, lists as ``[a,b]``)."""
    out = []
    for k, v in opts.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += cli_options(v, key + ".")
        elif isinstance(v, (list, tuple)):
            out.append(f"{key}=[{','.join(str(x) for x in v)}]")
        else:
            out.append(f"{key}={v}")
    return out


def records(work_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(work_dir) / "records" / "train.jsonl").read_text().splitlines()]


def train_runner(work_dir, root, resume=None, **extra):
    from thkit.engine.runner import build_runner

    runner = build_runner("fomm/small", work_dir=str(work_dir), resume=resume, cfg_options=small_options(root, **extra))
    runner.train()
    return runner


@HOOKS.register_module(force=True)
class StopAtHook(Hook):
    """Test helper: stop training after iteration ``at`` (like an interrupted run)."""

    def __init__(self, at: int):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            runner.train_loop.stop_training = True


from thkit.losses._base import Loss  # noqa: E402


@LOSSES.register_module(force=True)
class NaNFromLoss(Loss):
    """Test helper: 0 (with a gradient) before iteration ``start`` (0-based), NaN from then on."""

    default_inputs = {"pred": "prediction", "iteration": "iteration"}

    def __init__(self, weight: float = 1.0, start: int = 2):
        super().__init__(weight)
        self.start = start

    def forward(self, pred, iteration=None):
        value = pred.mean() * 0
        return value + float("nan") if iteration is not None and iteration >= self.start else value


# ------------------------------------------------------------------------------------------------------------
def test_train_cli_fomm_small_64px(tmp_path, synth_root):
    """`thkit train fomm/small` runs end to end and leaves every record it promises."""
    wd = tmp_path / "run"
    opts = small_options(synth_root)
    opts.pop("custom_hooks")  # the recipe's own hooks: progress, samples, records + curves, weights export
    args = ["train", "fomm/small", "--work-dir", str(wd), "--cfg-options"]
    args += cli_options(opts)
    args += ["train_cfg.max_iters=3", "train_cfg.val_interval=3", "default_hooks.checkpoint.interval=2",
             "custom_hooks.1.interval=2"]
    res = run_cli(*args, env={"OMP_NUM_THREADS": "1", "THKIT_TESTING": "1"})
    assert res.returncode == 0, res.stderr[-3000:]

    # checkpoints (weights-only readable) and the pointer to the last one
    assert (wd / "iter_2.pth").is_file() and (wd / "iter_3.pth").is_file()
    assert Path((wd / "last_checkpoint").read_text().strip()) == wd / "iter_3.pth"
    ck = torch.load(wd / "iter_3.pth", weights_only=True, map_location="cpu")
    assert ck["meta"]["iter"] == 3 and "thkit_rng_state" in ck
    assert any(k.startswith("generator.") for k in ck["state_dict"])
    assert any(k.startswith("discriminator.") for k in ck["state_dict"])
    assert set(ck["optimizer"]) >= {"generator", "discriminator"}

    # every loss term logged separately, every iteration
    rows = records(wd)
    assert [r["iter"] for r in rows] == [1, 2, 3]
    for r in rows:
        for k in G_TERMS + D_TERMS:
            assert isinstance(r[k], float) and r[k] == r[k], (k, r)
        assert abs(r["loss_g"] - sum(r[k] for k in G_TERMS[:-1])) < 1e-3 * max(1.0, abs(r["loss_g"]))
        assert "generator.lr" in r and "discriminator.lr" in r
    val = [json.loads(line) for line in (wd / "records" / "val.jsonl").read_text().splitlines()]
    assert val and val[-1]["iter"] == 3 and 0 < val[-1]["L1/value"] < 1 and val[-1]["PSNR/value"] > 0
    assert (wd / "records" / "loss_curves.png").stat().st_size > 1000

    # sample grids (4 rows of source/driving/prediction/deformed/flow/occlusion at 64 px) at iterations 2 and 3
    from PIL import Image

    grids = sorted((wd / "samples").glob("iter_*.png"))
    assert [g.name for g in grids] == ["iter_0000002.png", "iter_0000003.png"]
    w, h = Image.open(grids[0]).size
    assert w == 6 * (64 + 2) + 2 and h >= 4 * 64

    # the resolved recipe keeps the generator as `model` and the exported weights load into it
    from thkit.builder import build_model
    from thkit.checkpoint import load_into
    from thkit.recipe import load_recipe

    cfg = load_recipe(wd / "recipe.py")
    assert cfg.image_size == 64 and cfg.model.type == "TalkingHeadModel"
    exported = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))
    load_into(exported, wd / "weights.pth")
    # ... and so does the model folder, with no recipe and no size given, to the same outputs
    import thkit

    folder_model = thkit.create_model(wd / "model")
    assert folder_model.meta["image_size"] == 64 and (wd / "model" / "model.safetensors").is_file()
    x, y = torch.rand(2, 1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(folder_model(x, y)["prediction"], exported.eval()(x, y)["prediction"])
    events = list(wd.glob("*/vis_data/events.out.tfevents.*"))
    try:
        import tensorboard  # noqa: F401

        assert events, "TensorBoard is installed but no event file was written"
    except ImportError:
        assert not events


def test_resume_equals_uninterrupted_run(tmp_path, synth_root):
    """Stop after 2 of 4 iterations, resume (with 2 loader workers instead of 0): losses and weights equal a
    straight 4-iteration run (data order, augmentation and the equivariance transforms all resume)."""
    hooks = [dict(type="TrainRecordsHook", plot=False), dict(type="GeneratorEMAHook", decay=0.5, parts=["decoder"])]
    common = dict(**{"train_cfg.max_iters": 4, "train_cfg.val_interval": 2, "default_hooks.checkpoint.interval": 2},
                  custom_hooks=hooks)
    straight = train_runner(tmp_path / "straight", synth_root, **common)
    del straight
    stop = dict(common, custom_hooks=hooks + [dict(type="StopAtHook", at=2)])
    train_runner(tmp_path / "resumed", synth_root, **stop)
    assert not (tmp_path / "resumed" / "iter_4.pth").exists()
    resumed = train_runner(tmp_path / "resumed", synth_root, resume=True,
                           **dict(common, **{"train_dataloader.num_workers": 2}))
    assert resumed.iter == 4

    a, b = records(tmp_path / "straight"), records(tmp_path / "resumed")
    assert [r["iter"] for r in a] == [r["iter"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in G_TERMS + D_TERMS:
            assert abs(ra[k] - rb[k]) <= 1e-6, (ra["iter"], k, ra[k], rb[k])
    ca = torch.load(tmp_path / "straight" / "iter_4.pth", weights_only=True)
    cb = torch.load(tmp_path / "resumed" / "iter_4.pth", weights_only=True)
    # the generator EMA resumes too (it is in the checkpoint)
    for sa, sb in ((ca["state_dict"], cb["state_dict"]),
                   (ca[EMA_KEY]["state_dict"], cb[EMA_KEY]["state_dict"])):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6, rtol=0), k
    ema = {k: v for k, v in ca[EMA_KEY]["state_dict"].items() if k.startswith("decoder.module.")}
    assert ema and all(("generator.decoder." + k[len("decoder.module."):]) in ca["state_dict"] for k in ema)
    assert any(not torch.equal(v, ca["state_dict"]["generator.decoder." + k[len("decoder.module."):]])
               for k, v in ema.items() if v.is_floating_point()), "the EMA equals the online weights"


class _Runner:
    """The parts of an mmengine runner that GeneratorEMAHook uses."""

    def __init__(self, gen):
        self.model = torch.nn.Module()
        self.model.gen = gen
        self.iter = 0
        self.hooks = []


def test_generator_ema_hook_averages_the_chosen_parts_and_swaps_for_validation():
    from thkit.engine.hooks import GeneratorEMAHook

    gen = torch.nn.Module()
    gen.decoder, gen.motion = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    runner = _Runner(gen)
    hook = GeneratorEMAHook(decay=0.9, parts=["decoder"])
    hook.before_run(runner)
    thetas = []
    for it in range(3):
        with torch.no_grad():
            for p in gen.parameters():
                p.add_(torch.randn_like(p))
        thetas.append(gen.decoder.weight.detach().clone())
        runner.iter = it
        hook.after_train_iter(runner, it)
    expected = thetas[0]  # the first update copies, then ema <- 0.9 ema + 0.1 theta
    for t in thetas[1:]:
        expected = 0.9 * expected + 0.1 * t
    sd = hook.averaged_state_dict(runner)
    assert torch.allclose(sd["decoder.weight"], expected, atol=1e-6)
    assert torch.equal(sd["motion.weight"], gen.motion.weight)  # not averaged: the online weights
    online = gen.decoder.weight.detach().clone()
    hook.before_val_epoch(runner)
    assert torch.allclose(gen.decoder.weight, expected, atol=1e-6)
    hook.after_val_epoch(runner)
    assert torch.equal(gen.decoder.weight, online)
    with pytest.raises(ValueError, match="no part.*'encoder'.*its parts: decoder, motion"):
        GeneratorEMAHook(parts=["encoder"]).before_run(runner)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, synth_root):
    from thkit.engine.runner import build_runner
    from thkit.engine.trainer import NonFiniteLossError, unwrap

    opts = small_options(synth_root, **{"train_cfg.max_iters": 4, "train_cfg.val_interval": 100,
                                        "default_hooks.checkpoint.interval": 2,
                                        "losses.boom": dict(type="NaNFromLoss", start=2)})
    runner = build_runner("fomm/small", work_dir=str(tmp_path), cfg_options=opts)
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    msg = str(info.value)
    assert "'boom'" in msg and "iteration 3" in msg and "nan" in msg
    assert str(tmp_path / "iter_2.pth") in msg
    assert info.value.term == "boom"
    assert not (tmp_path / "iter_3.pth").exists() and not (tmp_path / "iter_4.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text().strip() == str(tmp_path / "iter_2.pth")
    # no parameter was updated at the failing iteration: they are still those of the last checkpoint (batch-norm
    # running statistics did move in that iteration's forward pass; the checkpoint on disk has the good ones)
    saved = torch.load(tmp_path / "iter_2.pth", weights_only=True)["state_dict"]
    for k, v in saved.items():
        assert torch.isfinite(v.float()).all(), k
    live = dict(unwrap(runner.model).named_parameters())
    assert len(live) > 50
    for k, p in live.items():
        assert torch.equal(saved[k], p.detach().cpu()), k


def test_nonfinite_skip_mode_drops_the_batch_without_an_update(tmp_path, synth_root):
    """trainer.nonfinite='skip' (MCNet's official loop): a NaN batch leaves every weight as it was and
    is logged; more than max_skips in a row stop training with the same error as the 'stop' mode."""
    from thkit.engine.runner import build_runner
    from thkit.engine.trainer import NonFiniteLossError, unwrap

    opts = small_options(synth_root, **{"train_cfg.max_iters": 6, "train_cfg.val_interval": 100,
                                        "default_hooks.checkpoint.interval": 100,
                                        "losses.boom": dict(type="NaNFromLoss", start=2),
                                        "trainer": dict(nonfinite="skip", max_skips=2)})
    runner = build_runner("fomm/small", work_dir=str(tmp_path), cfg_options=opts)
    model = unwrap(runner.model)
    seen, logged = [], []
    orig_inner, orig_step = model._train_step, model.train_step

    def spy(data, optim_wrapper):
        seen.append({k: p.detach().clone() for k, p in model.named_parameters()})
        return orig_inner(data, optim_wrapper)

    def spy_step(data, optim_wrapper):
        out = orig_step(data, optim_wrapper)
        logged.append(float(out["skipped_nonfinite"]))
        return out

    model._train_step, model.train_step = spy, spy_step
    with pytest.raises(NonFiniteLossError, match=r"3 batches in a row were non-finite; trainer\.max_skips=2"):
        runner.train()
    assert len(seen) == 5  # iterations 1-2 trained, 3-4 skipped, 5 stops
    for a, b in zip(seen[2:], seen[3:]):  # no weight moved across a skipped batch
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(seen[0][k], seen[2][k]) for k in seen[0])  # the good batches did train
    assert logged == [0.0, 0.0, 1.0, 1.0]


def test_crash_while_writing_checkpoint_keeps_previous(tmp_path, synth_root, monkeypatch):
    """A crash in the middle of writing iteration 2's checkpoint (max_keep_ckpts=1) leaves iteration 1's intact,
    ``last_checkpoint`` pointing at it, no partial file, and training resumes from it."""
    import thkit.checkpoint as tc

    real_save = torch.save
    calls = {"n": 0}

    def crashing_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError("simulated crash: disk full")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(tc.torch, "save", crashing_save)
    opts = {"train_cfg.max_iters": 3, "train_cfg.val_interval": 100, "default_hooks.checkpoint.interval": 1,
            "default_hooks.checkpoint.max_keep_ckpts": 1}
    with pytest.raises(OSError, match="disk full"):
        train_runner(tmp_path, synth_root, **opts)
    monkeypatch.setattr(tc.torch, "save", real_save)
    files = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".pth", ".tmp") or ".tmp" in p.name)
    assert files == ["iter_1.pth"], files
    assert (tmp_path / "last_checkpoint").read_text().strip() == str(tmp_path / "iter_1.pth")
    assert torch.load(tmp_path / "iter_1.pth", weights_only=True)["meta"]["iter"] == 1
    runner = train_runner(tmp_path, synth_root, resume=True, **dict(opts, **{"train_cfg.max_iters": 2}))
    assert runner.iter == 2 and (tmp_path / "iter_2.pth").is_file()


DDP_WORKER = r'''
import json, sys
import torch
import torch.distributed as dist
torch.set_num_threads(1)
from thkit.engine.runner import build_runner
from thkit.engine.trainer import unwrap
work_dir, opts = sys.argv[1], json.loads(sys.argv[2])
runner = build_runner("fomm/small", work_dir=work_dir, cfg_options=opts)
assert runner.distributed and dist.get_backend() == "gloo", (runner.distributed, dist.get_backend())
runner.train()
sd = {k: v.detach().cpu() for k, v in unwrap(runner.model).named_parameters()}
torch.save(sd, f"{work_dir}/params_rank{dist.get_rank()}.pt")
dist.barrier()
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo_cpu(tmp_path, synth_root):
    """torchrun with 2 CPU processes: gloo DDP through mmengine (our B2/B3 workarounds), both finish, rank 0
    checkpoints, and the parameters are identical on both ranks (and equal the checkpoint's)."""
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_WORKER)
    wd = tmp_path / "ddp"
    opts = small_options(str(synth_root), **{"train_cfg.max_iters": 2, "train_cfg.val_interval": 2,
                                              "default_hooks.checkpoint.interval": 2})
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", THKIT_TESTING="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={_free_port()}", str(script), str(wd),
                          json.dumps(opts)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])
    p0 = torch.load(wd / "params_rank0.pt", weights_only=True)
    p1 = torch.load(wd / "params_rank1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and len(p0) > 50
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
    ck = torch.load(wd / "iter_2.pth", weights_only=True)
    for k in p0:
        assert torch.equal(ck["state_dict"][k], p0[k]), k
    assert [r["iter"] for r in records(wd)] == [1, 2]


def test_bf16_autocast_optim_wrapper_on_cpu():
    """AmpOptimWrapper refuses the CPU; AutocastOptimWrapper runs the forward in bf16 and steps in fp32."""
    from mmengine.optim import AmpOptimWrapper

    from thkit.engine.optim import AutocastOptimWrapper

    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    with pytest.raises(AssertionError):
        AmpOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    wrap = AutocastOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1), clip_grad=dict(max_norm=1.0))
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(4, 8)
    with wrap.optim_context(net):
        y = net(x)
    assert y.dtype == torch.bfloat16
    wrap.update_params(y.float().pow(2).mean())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_bf16_training_step_of_the_trainer():
    """One GAN training step of fomm/tiny_fixture under bf16 autocast on the CPU: finite losses, both nets move,
    the generator's gradient is clipped."""
    from mmengine.optim import OptimWrapperDict

    from thkit.engine.optim import AutocastOptimWrapper
    from thkit.engine.trainer import TalkingHeadTrainer
    from thkit.recipe import load_recipe

    cfg = load_recipe("fomm/tiny_fixture", {"losses.perceptual.layer_weights": [10],
                                            "losses.pixel": dict(type="L1Loss", weight=1.0),
                                            "losses.adversarial.weight": 1.0,
                                            "losses.adversarial.feature_matching": [10, 10, 10, 10]})
    torch.manual_seed(0)
    trainer = TalkingHeadTrainer(generator=cfg.model, losses=cfg.losses, discriminator=cfg.discriminator)
    # generator: plain SGD with lr 1 and gradient clipping at 0.01, so the step itself shows the clipping
    wraps = OptimWrapperDict(
        generator=AutocastOptimWrapper(optimizer=torch.optim.SGD(trainer.generator.parameters(), lr=1.0),
                                       clip_grad=dict(max_norm=0.01)),
        discriminator=AutocastOptimWrapper(optimizer=torch.optim.Adam(trainer.discriminator.parameters(), lr=1e-3)))
    g0 = [p.detach().clone() for p in trainer.generator.parameters()]
    d0 = [p.detach().clone() for p in trainer.discriminator.parameters()]
    batch = {"source": torch.rand(2, 3, 64, 64), "driving": torch.rand(2, 3, 64, 64)}
    log = trainer.train_step(batch, wraps)
    for k in G_TERMS + D_TERMS:
        assert torch.isfinite(log[k]).all(), k
    step = torch.sqrt(sum(((a - p.detach()) ** 2).sum() for a, p in zip(g0, trainer.generator.parameters())))
    assert 0 < float(step) <= 0.01 * 1.001, float(step)  # moved, by at most lr * max_norm
    assert any(not torch.equal(a, p) for a, p in zip(d0, trainer.discriminator.parameters()))


# ------------------------------------------------------------------------------------------------------------
# data order and randomness (fast unit tests)
# ------------------------------------------------------------------------------------------------------------
def test_sampler_resumes_mid_stream_and_splits_ranks(monkeypatch):
    import itertools

    import mmengine.dist

    from thkit.engine.data import ResumableInfiniteSampler

    data = list(range(7))
    full = list(itertools.islice(iter(ResumableInfiniteSampler(data, seed=3)), 30))
    assert sorted(i for i, _ in full[:7]) == data and sorted(i for i, _ in full[7:14]) == data  # passes
    assert [i for i, _ in full[:7]] != [i for i, _ in full[7:14]]  # a new permutation per pass
    assert len({s for _, s in full}) == 30  # one seed per sample position
    s = ResumableInfiniteSampler(data, seed=3)
    s.set_start(11)
    assert list(itertools.islice(iter(s), 19)) == full[11:]
    # two ranks deal the same global stream round-robin
    ranks = []
    for r in (0, 1):
        monkeypatch.setattr(mmengine.dist, "get_dist_info", lambda r=r: (r, 2))
        ranks.append(list(itertools.islice(iter(ResumableInfiniteSampler(data, seed=3)), 15)))
    assert ranks[0] == full[0::2] and ranks[1] == full[1::2]


def test_seeded_dataset_is_a_function_of_the_seed_and_leaves_global_rng_alone():
    from thkit.engine.data import SeededDataset

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(2) + i

    ds = SeededDataset(Noisy())
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = ds[(1, 123)]
    assert torch.equal(torch.get_rng_state(), state)  # loading data never shifts the training stream
    torch.rand(5)
    assert torch.equal(ds[(1, 123)], a) and not torch.equal(ds[(1, 124)], a)
    assert len(ds) == 3 and isinstance(ds[0], torch.Tensor)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from thkit.engine.runner import resolve_resume
    from thkit.errors import ThkitError

    with pytest.raises(ThkitError, match="no checkpoint to resume from"):
        resolve_resume(True, str(tmp_path))
    assert resolve_resume(None, str(tmp_path)) is None


def test_recipe_without_training_entries_is_refused():
    from thkit.engine.runner import runner_kwargs
    from thkit.errors import RecipeError
    from thkit.recipe import load_recipe

    cfg = load_recipe("fomm/small")
    cfg.pop("losses")
    with pytest.raises(RecipeError, match="cannot be trained.*losses"):
        runner_kwargs(cfg, "/tmp/unused")


def test_progress_bar_and_time_budget_hooks(capsys):
    import logging
    import types

    from thkit.engine.hooks import ProgressBarHook, TimeBudgetHook

    runner = types.SimpleNamespace(max_iters=5, iter=1, train_loop=types.SimpleNamespace(stop_training=False),
                                   logger=logging.getLogger("test"))
    bar = ProgressBarHook(enabled=True)
    bar.before_train(runner)
    for _ in range(2):
        bar.after_train_iter(runner, 0, outputs={"loss_g": torch.tensor(1.25), "perceptual": torch.tensor(0.5),
                                                 "not_a_scalar": torch.zeros(3)})
        runner.iter += 1
    bar.bar.refresh()
    assert bar.bar.n == 3 and bar.bar.total == 5  # resumed at 1, two iterations since
    bar.after_train(runner)
    err = capsys.readouterr().err
    assert "3/5" in err and "loss_g=1.25" in err and "perceptual=0.5" in err and "it/s" in err
    assert ProgressBarHook(enabled="auto").enabled == "auto"  # 'auto': a bar only on a terminal

    budget = TimeBudgetHook(seconds=0.05)
    budget.before_train(runner)
    budget.after_train_iter(runner, 0)
    assert not runner.train_loop.stop_training
    import time

    time.sleep(0.06)
    budget.after_train_iter(runner, 0)
    assert runner.train_loop.stop_training

    # the CPU-time clock: sleeping uses no budget, computing does
    runner.train_loop.stop_training = False
    cpu = TimeBudgetHook(seconds=0.05, clock="cpu")
    cpu.before_train(runner)
    time.sleep(0.1)
    cpu.after_train_iter(runner, 0)
    assert not runner.train_loop.stop_training
    start = time.process_time()
    while time.process_time() - start < 0.06:
        pass
    cpu.after_train_iter(runner, 0)
    assert runner.train_loop.stop_training
    with pytest.raises(ValueError, match="clock must be one of wall, cpu"):
        TimeBudgetHook(seconds=1, clock="gpu")


def test_time_budget_decays_learning_rates_at_budget_fractions():
    """``milestones``: every optimiser's rates x gamma each time the used budget fraction passes one (a recipe's
    MultiStepLR compressed into a time budget), from the rates training started with; stopping is unchanged."""
    import logging
    import types

    from mmengine.optim import OptimWrapper, OptimWrapperDict

    from thkit.engine.hooks import TimeBudgetHook

    gen = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=5e-4)
    disc = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=2e-4)
    runner = types.SimpleNamespace(iter=0, train_loop=types.SimpleNamespace(stop_training=False),
                                   logger=logging.getLogger("test"),
                                   optim_wrapper=OptimWrapperDict(generator=OptimWrapper(gen),
                                                                  discriminator=OptimWrapper(disc)))
    hook = TimeBudgetHook(seconds=100, clock="cpu", milestones=[0.6, 0.9], gamma=0.1)
    now = [0.0]
    hook._now = lambda: now[0]
    hook.before_train(runner)
    seen = []
    for t in (0, 30, 59.9, 60, 75, 89.9, 90, 99):
        now[0] = t
        hook.before_train_iter(runner, 0)
        seen.append((gen.param_groups[0]["lr"], disc.param_groups[0]["lr"]))
        hook.after_train_iter(runner, 0)
        assert not runner.train_loop.stop_training
    expect = [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert [g for g, _ in seen] == pytest.approx([5e-4 * f for f in expect])
    assert [d for _, d in seen] == pytest.approx([2e-4 * f for f in expect])
    now[0] = 100
    hook.after_train_iter(runner, 0)
    assert runner.train_loop.stop_training
    # a single optimiser (no OptimWrapperDict) and no milestones: the rate is left alone
    plain = TimeBudgetHook(seconds=10)
    runner.optim_wrapper = OptimWrapper(gen)
    plain.before_train(runner)
    plain.before_train_iter(runner, 0)
    assert gen.param_groups[0]["lr"] == pytest.approx(5e-6)
    single = TimeBudgetHook(seconds=10, milestones=[0.5], gamma=0.5)
    single._now = lambda: now[0]
    now[0] = 0
    single.before_train(runner)
    now[0] = 6
    single.before_train_iter(runner, 0)
    assert gen.param_groups[0]["lr"] == pytest.approx(2.5e-6)
    for bad, match in (([0.9, 0.6], "increasing fractions"), ([1.0], "increasing fractions"), ([0.0], "in \\(0, 1\\)")):
        with pytest.raises(ValueError, match=match):
            TimeBudgetHook(seconds=1, milestones=bad)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        TimeBudgetHook(seconds=1, milestones=[0.5], gamma=0)

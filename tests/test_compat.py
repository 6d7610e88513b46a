"""Each mmengine workaround in thkit._compat, with a test that it is needed and that it works."""
import importlib.util

import thkit  # noqa: F401  (applies the patches)


def test_is_installed_without_pkg_resources():
    import mmengine.config.config as cc
    import mmengine.utils as mu

    from thkit._compat.mmengine import get_installed_path, is_installed

    assert mu.is_installed is is_installed and cc.is_installed is is_installed
    assert cc.get_installed_path is get_installed_path
    assert is_installed("torch") and is_installed("mmengine")
    assert not is_installed("surely_not_a_package_xyz")
    assert get_installed_path("thkit").endswith("thkit")


def test_pkg_resources_really_absent_or_patched():
    # on new setuptools pkg_resources is gone; either way our patched function must not need it
    has_pkg_resources = importlib.util.find_spec("pkg_resources") is not None
    from mmengine.utils import is_installed

    assert is_installed("numpy") is True
    assert isinstance(has_pkg_resources, bool)


# ------------------------------------------------------------------------------------------------------------
# training-engine workarounds (thkit._compat.mmengine, applied by apply_engine())
# ------------------------------------------------------------------------------------------------------------
import collections  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


def _hub_state():
    from mmengine.logging import HistoryBuffer

    buf = HistoryBuffer()
    for v in (1.0, 2.5, np.float64(3.0)):
        buf.update(v)
    return {
        "meta": {"iter": 4, "seed": np.int64(7), "lr": np.float64(1e-3)},
        "message_hub": {"log_scalars": collections.OrderedDict({"train/loss": buf}),
                        "runtime_info": {"iter": 4, "arr": np.arange(3)}, "resumed_keys": {"iter": True}},
        "param_schedulers": [{"milestones": collections.Counter({10: 1, 20: 1}), "gamma": 0.1}],
        "state_dict": {"w": torch.ones(2)},
    }


def test_b1_plain_checkpoints_load_with_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer

    from thkit._compat.mmengine import from_plain, to_plain

    state = _hub_state()
    # the problem: what mmengine puts into a checkpoint does not load with torch's safe default
    torch.save(state, tmp_path / "mm.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "mm.pth", weights_only=True)
    # the fix: plain containers + tensors, and back
    torch.save(to_plain(state), tmp_path / "plain.pth")
    back = from_plain(torch.load(tmp_path / "plain.pth", weights_only=True))
    buf = back["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buf, HistoryBuffer) and buf.current() == 3.0 and buf.mean() == pytest.approx(6.5 / 3)
    assert back["meta"] == {"iter": 4, "seed": 7, "lr": 1e-3}
    assert back["param_schedulers"][0]["milestones"] == collections.Counter({10: 1, 20: 1})
    assert np.array_equal(back["message_hub"]["runtime_info"]["arr"], np.arange(3))
    assert torch.equal(back["state_dict"]["w"], torch.ones(2))


def test_b1_unknown_objects_are_named_or_dropped_from_runtime_info():
    from thkit._compat.mmengine import PlainCheckpointError, to_plain

    with pytest.raises(PlainCheckpointError, match=r"checkpoint\.meta\.obj holds a .*object"):
        to_plain({"meta": {"obj": object()}})
    with pytest.warns(UserWarning, match="runtime_info.obj"):
        out = to_plain({"message_hub": {"runtime_info": {"obj": object(), "iter": 3}}})
    assert out == {"message_hub": {"runtime_info": {"iter": 3}}}


class _Payload:
    """Unpickling this would create a file: proof that a loader executed pickled code."""

    target = ""

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_b1_loader_reads_weights_only_and_never_unpickles(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

    from thkit._compat.mmengine import apply_engine, load_local_checkpoint, to_plain
    from thkit.errors import CheckpointError

    apply_engine()
    assert CheckpointLoader._schemes[""] is load_local_checkpoint
    torch.save(to_plain(_hub_state()), tmp_path / "ok.pth")
    ck = _load_checkpoint(str(tmp_path / "ok.pth"), map_location="cpu")
    assert type(ck["message_hub"]["log_scalars"]["train/loss"]).__name__ == "HistoryBuffer"
    evil = _Payload()
    evil.target = str(tmp_path / "pwned")
    torch.save({"x": evil}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        _load_checkpoint(str(tmp_path / "evil.pth"), map_location="cpu")
    assert not (tmp_path / "pwned").exists()


def test_atomic_save_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    import mmengine.runner
    import mmengine.runner.runner as rr

    import thkit.checkpoint as tc
    from thkit._compat.mmengine import apply_engine, atomic_save_checkpoint

    apply_engine()
    assert rr.save_checkpoint is atomic_save_checkpoint and mmengine.runner.save_checkpoint is atomic_save_checkpoint
    path = tmp_path / "iter_1.pth"
    atomic_save_checkpoint(_hub_state(), str(path))
    good = path.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half")
        raise OSError("killed mid-write")

    monkeypatch.setattr(tc.torch, "save", crash)
    with pytest.raises(OSError):
        atomic_save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, str(path))
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["iter_1.pth"]


class _FakeRunner:
    def __init__(self, work_dir, fail_at):
        from mmengine.logging import MessageHub

        self.work_dir = str(work_dir)
        self.message_hub = MessageHub.get_instance(f"compat_fake_{id(self)}")
        self.fail_at = fail_at

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        from thkit._compat.mmengine import atomic_save_checkpoint

        if filename == self.fail_at:
            raise OSError("killed while saving")
        atomic_save_checkpoint({"meta": {"file": filename}}, os.path.join(out_dir, filename))


def _hook(cls, work_dir):
    from mmengine.fileio import get_file_backend

    hook = cls(interval=1, by_epoch=False, max_keep_ckpts=1)
    hook.out_dir = str(work_dir)
    hook.file_backend = get_file_backend(str(work_dir))
    hook.keep_ckpt_ids = collections.deque(maxlen=1)  # what before_train sets up
    return hook


def test_checkpoint_rotation_writes_before_deleting(tmp_path):
    from mmengine.hooks import CheckpointHook

    from thkit._compat.mmengine import save_checkpoint_with_step

    # mmengine: with max_keep_ckpts=1 the old checkpoint is deleted before the new one is written -> nothing left
    (tmp_path / "mm").mkdir()
    hook, runner = _hook(CheckpointHook, tmp_path / "mm"), _FakeRunner(tmp_path / "mm", "iter_2.pth")
    hook._save_checkpoint_with_step(runner, 1, {})
    with pytest.raises(OSError):
        hook._save_checkpoint_with_step(runner, 2, {})
    assert not any(p.suffix == ".pth" for p in (tmp_path / "mm").iterdir())
    # ours: the new one is written first; on a crash the old one and the pointer to it stay
    (tmp_path / "ours").mkdir()
    hook, runner = _hook(CheckpointHook, tmp_path / "ours"), _FakeRunner(tmp_path / "ours", "iter_2.pth")
    save_checkpoint_with_step(hook, runner, 1, {})
    with pytest.raises(OSError):
        save_checkpoint_with_step(hook, runner, 2, {})
    assert (tmp_path / "ours" / "iter_1.pth").is_file()
    assert (tmp_path / "ours" / "last_checkpoint").read_text() == str(tmp_path / "ours" / "iter_1.pth")
    runner.fail_at = None
    save_checkpoint_with_step(hook, runner, 3, {})
    assert sorted(p.name for p in (tmp_path / "ours").iterdir() if p.suffix == ".pth") == ["iter_3.pth"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="B2/B3 are about machines without a GPU")
def test_b2_b3_cpu_distributed(monkeypatch):
    import torch.distributed as dist
    from mmengine.dist.utils import _init_dist_pytorch

    from thkit._compat.mmengine import ddp_wrapper_cfg, init_cpu_distributed

    assert not dist.is_initialized()
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert init_cpu_distributed() is False  # not under torchrun
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(k, v)
    # B2: mmengine's pytorch launcher insists on CUDA even for gloo
    with pytest.raises((RuntimeError, AssertionError)):
        _init_dist_pytorch(backend="gloo")
    assert not dist.is_initialized()
    try:
        assert init_cpu_distributed("gloo") is True and dist.get_backend() == "gloo"
        net = torch.nn.Linear(2, 2)
        # B3: device_ids on a CPU module is rejected; ours passes None
        with pytest.raises(ValueError, match="device_ids"):
            torch.nn.parallel.DistributedDataParallel(net, device_ids=[0])
        cfg = ddp_wrapper_cfg(dict(type="MMSeparateDistributedDataParallel"), "cpu")
        assert cfg["device_ids"] is None and cfg["broadcast_buffers"] is False
        torch.nn.parallel.DistributedDataParallel(net, device_ids=cfg["device_ids"])
        assert ddp_wrapper_cfg(None, "cuda") == dict(type="MMDistributedDataParallel", broadcast_buffers=False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_b4_short_training_prints_no_mmengine_deprecation(tmp_path, capfd):
    """A short `fomm/small` training run (what `thkit train` and `thkit demo` do) emits no DeprecationWarning
    from mmengine and logs none of mmengine's "will be deprecated" lines."""
    import warnings

    from thkit._compat.mmengine import FILE_CLIENT_DEPRECATIONS
    from thkit.datasets.synthetic import write_synthetic_dataset
    from thkit.engine.runner import build_runner

    synth = dict(videos=2, frames=4, seed=0)
    root = write_synthetic_dataset(tmp_path / "data", size=64, progress=False, **synth)
    opts = {"image_size": 64, "losses.perceptual.scales": [1, 0.5], "train_dataloader.batch_size": 2,
            "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
            "train_dataloader.dataset.root": str(root), "train_dataloader.dataset.synth": synth,
            "val_dataloader.dataset.root": str(root), "val_dataloader.dataset.synth": synth,
            "val_dataloader.dataset.max_frames": 2, "train_cfg.max_iters": 2, "train_cfg.val_interval": 2,
            "default_hooks.checkpoint.interval": 2, "default_hooks.logger.interval": 1}
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner = build_runner("fomm/small", work_dir=str(tmp_path / "run"), cfg_options=opts)
            runner.train()
    finally:
        torch.set_num_threads(n)
    assert (tmp_path / "run" / "iter_2.pth").is_file()  # the checkpoint hook ran (and built mmengine's FileClient)
    from_mmengine = [w for w in caught if issubclass(w.category, DeprecationWarning)
                     and ("mmengine" in w.filename or "mmengine" in str(w.message))]
    assert not from_mmengine, [f"{w.filename}:{w.lineno}: {w.message}" for w in from_mmengine]
    out = capfd.readouterr()
    log = out.out + out.err
    assert "Iter(train) [2/2]" in log  # the log was captured
    assert not any(p in log for p in FILE_CLIENT_DEPRECATIONS)
    assert "will be deprecated" not in log and "DeprecationWarning" not in log


def test_b4_only_the_two_file_client_lines_are_dropped():
    from mmengine.fileio import FileClient
    from mmengine.fileio.file_client import HardDiskBackend
    from mmengine.logging import MMLogger

    from thkit._compat.mmengine import FILE_CLIENT_DEPRECATIONS, without_file_client_deprecation

    logger = MMLogger.get_current_instance()
    seen = []

    class Keep:
        def filter(self, record):
            seen.append(record.getMessage())
            return False  # keep the test's output quiet

    keep = Keep()
    with without_file_client_deprecation() as drop:
        logger.addFilter(keep)  # runs after the drop filter: sees what is left
        try:
            FileClient.infer_client(None, "/tmp")  # its backend may be cached from an earlier test: built below
            HardDiskBackend()
            logger.warning("a real warning")
            logger.warning("FileClient will be deprecated")  # not the exact line: kept
        finally:
            logger.removeFilter(keep)
    assert all(any(m.startswith(p) for m in drop.dropped) for p in FILE_CLIENT_DEPRECATIONS)
    assert seen == ["a real warning", "FileClient will be deprecated"]
    assert drop not in logger.filters  # removed on exit

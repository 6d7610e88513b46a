import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "official"

# keep the suite reproducible and light on the 2-core CI machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("THKIT_TESTING", "1")


def load_benchmark(name: str, monkeypatch=None):
    """``benchmarks/<name>.py`` as a module (``thkit_bench_<name>``); with ``monkeypatch``, ``benchmarks/`` is on
    ``sys.path`` for the test (for scripts that import their neighbours, e.g. ``learns``)."""
    import importlib.util

    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"thkit_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_report_header(config):
    """The resolved torch / torchvision, so that a failing run names the versions it ran with."""
    import platform

    import torchvision

    return [f"thkit test run: torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"python {platform.python_version()}, {torch.get_num_threads()} torch thread(s), "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}"]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"official fixtures not found at {FIXTURES} (../shared beside the repository)")
    return FIXTURES


def run_cli(*args, env=None, cwd=None):
    """Run the installed ``thkit`` CLI in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "thkit.cli", *args], capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT, timeout=600)


def one_line_error(capsys, *needles) -> str:
    """The captured stderr of a CLI call that failed: one ``error: ...`` line, no traceback, naming each needle."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    The models these modules run are narrow: one thread is as fast as two, and on a busy 2-core machine two
    threads can be many times slower.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def official_nets(method: str, official_state_dicts: dict):
    """``recipes/<method>/tiny_fixture.py``'s model and discriminator in eval mode, with the fixture's official
    weights converted by thkit's converter and loaded strictly."""
    from thkit.builder import build, build_model
    from thkit.checkpoint import load_state_dict_strict
    from thkit.convert import get_converter
    from thkit.recipe import load_recipe

    cfg = load_recipe(f"{method}/tiny_fixture")
    model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size")).eval()
    disc = build("discriminator", cfg.discriminator.to_dict(), path="discriminator").eval()
    sds = get_converter(method)(official_state_dicts)
    load_state_dict_strict(model, sds["model"], "model")
    load_state_dict_strict(disc, sds["discriminator"], "discriminator")
    return model, disc


def official_zero_state_dicts(method: str) -> dict:
    """Zero tensors with the shapes and dtypes of ``<method>/vox256_keys.json``: the official full-size
    networks' state dicts, ``{network: {key: tensor}}`` (for key-conversion tests without weights)."""
    import json

    keys = json.loads((FIXTURES / method / "vox256_keys.json").read_text())
    return {net: {k: torch.zeros(shape, dtype=getattr(torch, info.get("non_float32_keys", {}).get(k, "float32")))
                  for k, shape in info["keys"].items()}
            for net, info in keys["networks"].items()}


def close_compact(t: torch.Tensor, ref, atol: float, what: str) -> float:
    """Max abs error of ``t`` against a full tensor, or against a compacted fixture entry (README §1.1: every
    ``stride``-th element on the spatial dims, then the sums), asserting it is within ``atol``."""
    t = t.detach()
    if isinstance(ref, dict) and ref.get("__compact__"):
        assert list(t.shape) == ref["shape"], f"{what}: shape {tuple(t.shape)} vs {ref['shape']}"
        d0, d1 = ref["spatial_dims"]
        idx = [slice(None)] * t.dim()
        idx[d0] = idx[d1] = slice(None, None, ref["stride"])
        err = (t[tuple(idx)].double() - ref["sub"].double()).abs().max().item()
        td = t.double()
        n = t.numel()
        for key, val in (("sum", td.sum()), ("abs_sum", td.abs().sum())):
            gap = abs(val.item() - ref[key])
            assert gap <= 0.1 * atol * n, f"{what}: {key} differs by {gap:.3g} (> {0.1 * atol * n:.3g})"
        sq = td.pow(2).sum().item()
        assert abs(sq - ref["sq_sum"]) <= 1e-4 * max(1.0, ref["sq_sum"]), f"{what}: sq_sum {sq} vs {ref['sq_sum']}"
    else:
        assert t.shape == ref.shape, f"{what}: shape {tuple(t.shape)} vs {tuple(ref.shape)}"
        err = (t.double() - ref.double()).abs().max().item()
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"
    return err


def official_copy(fx: dict) -> dict:
    """A fixture's official state dicts as fresh dicts (``{network: {key: tensor}}``) that a test may edit."""
    return {net: dict(sd) for net, sd in fx["state_dict"].items()}


def load_strict_on_meta(state_dicts: dict, **modules) -> None:
    """``load_state_dict_strict(module, state_dicts[name], name)`` for each ``name=module`` (meta-device models:
    torch's "copying from a non-meta parameter to a meta parameter" warning is expected and silenced)."""
    import warnings

    from thkit.checkpoint import load_state_dict_strict

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*meta parameter.*")
        for name, module in modules.items():
            load_state_dict_strict(module, state_dicts[name], name)


def moving_block_frames(lo: float, hi: float, n: int, size: int, seed: int = 1
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A random source (1, 3, size, size) and ``n`` driving frames with a bright block that moves down by 6 px a
    frame, so the keypoints move; values in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    src = lo + (hi - lo) * torch.rand(1, 3, size, size, generator=g)
    frames = []
    for i in range(n):
        f = torch.rand(3, size, size, generator=g) * 0.3
        f[:, 8 + 6 * i:28 + 6 * i, 20:40] += 0.7
        frames.append(lo + (hi - lo) * f.clamp(0, 1))
    return src, frames

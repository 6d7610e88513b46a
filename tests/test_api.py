"""The Python front door (thkit.api): create_model, list_models, load_recipe, convert (model folders), animate,
converter auto-detection, and recipes in a wheel installed outside the checkout."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, run_cli

import thkit
from thkit.errors import CheckpointError, RecipeError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_list_models_and_summaries():
    names = thkit.list_models()
    assert {"fomm/vox256", "tpsmm/vox256", "smac/vox256", "smac/small"} <= set(names)
    assert not any("_base_" in n for n in names)
    smac = thkit.list_models("smac/*")
    assert smac and all(n.startswith("smac/") for n in smac)
    summary = dict(thkit.list_models("fomm/vox256", with_summary=True))
    assert summary["fomm/vox256"].startswith("FOMM (Siarohin et al., NeurIPS 2019)")


def test_create_model_by_name_size_and_overrides():
    m = thkit.create_model("fomm/small", size=64, cfg_options={"model.keypoint_detector.num_kp": 7,
                                                                "model.motion.num_kp": 7})
    assert not m.training and m.meta["image_size"] == 64 and m.meta["weights"] is None
    assert m.recipe.model.keypoint_detector.num_kp == 7 and m.keypoint_detector.num_kp == 7
    with torch.no_grad():
        out = m(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert out["prediction"].shape == (1, 3, 64, 64) and out["kp_driving"]["value"].shape == (1, 7, 2)


def test_unknown_model_name_names_the_closest():
    with pytest.raises(RecipeError, match=r"no recipe 'fom/vox256'.*did you mean 'fomm/vox256'"):
        thkit.create_model("fom/vox256")


@pytest.fixture(scope="module")
def fomm_fx():
    return torch.load(FIXTURES / "fomm" / "tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def fomm_folder(tmp_path_factory, fomm_fx):
    """The FOMM fixture's official weights as an official file, converted into a model folder."""
    d = tmp_path_factory.mktemp("fomm")
    official = d / "vox-cpk.pth.tar"
    torch.save(fomm_fx["state_dict"], official)
    folder = thkit.convert_checkpoint(official, d / "fomm_tiny", recipe="fomm/tiny_fixture")
    return official, folder


def test_model_folder_files_and_meta(fomm_folder):
    official, folder = fomm_folder
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors", "recipe.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] == "thkit-model/1" and meta["method"] == "fomm" and meta["image_size"] == 64
    assert meta["input_range"] == [0.0, 1.0] and meta["thkit_version"] == thkit.__version__
    assert meta["sources"] == [{"file": official.name, "sha256": hashlib.sha256(official.read_bytes()).hexdigest()}]
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["model"]["type"] == "TalkingHeadModel" and "_base_" not in recipe


def test_model_folder_reproduces_the_official_outputs(fomm_folder, fomm_fx):
    """Loaded with no recipe and no size: the official fixture's prediction within 1e-4."""
    _, folder = fomm_folder
    m = thkit.create_model(folder)
    assert m.meta["image_size"] == 64 and m.meta["weights"] == str(folder)
    with torch.no_grad():
        out = m(fomm_fx["inputs"]["source"], fomm_fx["inputs"]["driving"])
    err = (out["prediction"] - fomm_fx["outputs"]["generator"]["prediction"]).abs().max().item()
    assert err <= 1e-4, err
    assert set(getattr(thkit.create_model(folder, extra=("discriminator",)), "extra")) == {"discriminator"}


def test_official_checkpoint_is_detected_and_loaded(fomm_folder, fomm_fx):
    official, folder = fomm_folder
    a = thkit.create_model("fomm/tiny_fixture", checkpoint=official)
    b = thkit.create_model(folder)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_broken_model_folders_are_one_line_errors(fomm_folder, tmp_path):
    _, folder = fomm_folder

    def copy(name):
        d = tmp_path / name
        shutil.copytree(folder, d)
        return d

    d = copy("truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or corrupted") as e:
        thkit.create_model(d)
    assert "\n" not in str(e.value)

    d = copy("garbage")
    (d / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or corrupted"):
        thkit.create_model(d)

    d = copy("unregistered")
    rec = json.loads((d / "recipe.json").read_text())
    rec["model"]["warper"]["type"] = "NoSuchWarper"
    (d / "recipe.json").write_text(json.dumps(rec))
    with pytest.raises(RecipeError, match=r"recipe\.json: model\.warper\.type: unknown warper 'NoSuchWarper'"):
        thkit.create_model(d)

    d = copy("missing")
    (d / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no meta\.json"):
        thkit.create_model(d)


def test_cli_convert_then_build_and_eval_from_the_folder(fomm_fx, tmp_path):
    official = tmp_path / "vox-cpk.pth.tar"
    torch.save(fomm_fx["state_dict"], official)
    r = run_cli("convert", str(official), "--recipe", "fomm/tiny_fixture", "-o", str(tmp_path / "folder"))
    assert r.returncode == 0, r.stderr
    assert "wrote model folder" in r.stdout
    r = run_cli("build", "--checkpoint", str(tmp_path / "folder"))
    assert r.returncode == 0, r.stderr
    assert "loaded weights from" in r.stdout and "prediction: 1x3x64x64" in r.stdout
    # a model folder needs its recipe: neither --config nor --recipe is a one-line error
    r = run_cli("convert", str(official), "-o", str(tmp_path / "f2"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "--config" in r.stderr, r.stderr


def test_detection_asks_every_registered_converter(fomm_fx):
    from thkit.convert import Converter, detect_method, detect_scores
    from thkit.registry import CONVERTERS

    assert detect_method(fomm_fx["state_dict"]) == "fomm"
    with pytest.raises(CheckpointError, match=r"no converter fits \(scores: .*fomm 0\.00.*smac 0\.00.*tpsmm 0\.00"):
        detect_method({"weights": {"a": torch.zeros(1)}})
    # a FOMM file with keys FOMM's tables do not know scores below 1 and names them
    odd = {k: dict(v) for k, v in fomm_fx["state_dict"].items()}
    odd["generator"]["mbUnit.memory"] = torch.zeros(3)
    scores = {m: (s, why) for m, s, why in detect_scores(odd)}
    assert 0.9 < scores["fomm"][0] < 1 and "generator.mbUnit.memory" in scores["fomm"][1]
    with pytest.raises(CheckpointError, match="no converter fits"):
        detect_method(odd)

    class Twin(Converter):
        """A plugin's converter that claims FOMM files too."""

        def detect(self, checkpoint):
            return (1.0, "claims everything") if isinstance(checkpoint, dict) else (0.0, "")

        def convert(self, checkpoint):
            return {}

    CONVERTERS.register_module(name="test_twin", module=Twin)
    try:
        with pytest.raises(CheckpointError, match=r"fits several converters \(fomm, test_twin"):
            detect_method(fomm_fx["state_dict"])
    finally:
        del CONVERTERS._module_dict["test_twin"]
    assert detect_method(fomm_fx["state_dict"]) == "fomm"


def test_animate_returns_frames_equal_to_the_model(tmp_path):
    torch.manual_seed(0)
    m = thkit.create_model("fomm/small", size=64)
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)
    driving = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    frames = thkit.animate(source, driving, m, relative=False)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    # absolute motion: each frame is the model's forward on (source, driving frame), quantised
    from thkit.inference.animate import _prepare

    with torch.no_grad():
        pred = m(_prepare(source, None, 64)[None], _prepare(driving[1], None, 64)[None])["prediction"][0]
    ref = pred.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(frames[1].astype(int) - ref.astype(int)).max() <= 1


def test_wheel_ships_the_recipes_and_builds_outside_the_checkout(tmp_path):
    """Build a wheel from a copy of the sources, install it into a fresh venv outside the checkout (its
    dependencies borrowed from the test environment through a .pth file), and build models by name there."""
    src = tmp_path / "src"
    for name in ("thkit", "recipes"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    wheel = next((tmp_path / "dist").glob("thkit-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = next(venv.glob("lib/python*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")  # torch & co, not the checkout's editable thkit
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = subprocess.run([str(py), "-c", "import thkit, thkit.recipe as r; print(thkit.__file__); print(r.RECIPES_DIR); "
                        "m = thkit.create_model('smac/small'); print(type(m).__name__, m.meta['image_size'])"],
                       capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    file, recipes, built = r.stdout.strip().splitlines()
    assert file.startswith(str(site)) and recipes == str(site / "thkit" / "recipes"), r.stdout
    assert built == "TalkingHeadModel 128"
    # (64 px is below what fomm/vox256's 5-block hourglasses at scale 0.25 can pool: 128 is its smallest size)
    r = subprocess.run([str(py), "-m", "thkit", "build", "fomm/vox256", "--size", "128"], capture_output=True,
                       text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "model parameters: 59,790,759" in r.stdout and "prediction: 1x3x128x128" in r.stdout


def test_convert_with_the_official_configuration(fomm_fx, tmp_path):
    """No thkit recipe named: the converter maps the official configuration, and the folder reproduces the
    fixture (the fixture ran the official code on today's torch: align_corners False, 64 px)."""
    import yaml

    official = tmp_path / "vox-cpk.pth.tar"
    torch.save(fomm_fx["state_dict"], official)
    folder = thkit.convert_checkpoint(official, tmp_path / "f", config=fomm_fx["config"],
                                      patches=fomm_fx["meta"]["fixture_patches"],
                                      recipe_options=dict(image_size=64, align_corners=False))
    assert json.loads((folder / "meta.json").read_text())["recipe_from"] == "official configuration"
    m = thkit.create_model(folder)
    with torch.no_grad():
        out = m(fomm_fx["inputs"]["source"], fomm_fx["inputs"]["driving"])
    err = (out["prediction"] - fomm_fx["outputs"]["generator"]["prediction"]).abs().max().item()
    assert err <= 1e-4, err
    # the command line reads the official yaml file (its model_params section)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"model_params": fomm_fx["config"]}))
    r = run_cli("convert", "--from", "fomm", str(official), "--config", str(tmp_path / "tiny.yaml"), "-o",
                str(tmp_path / "cli_folder"))
    assert r.returncode == 0, r.stderr
    assert thkit.create_model(tmp_path / "cli_folder").keypoint_detector.num_kp == 10


def test_build_accepts_a_config_dict():
    """builder.build takes the ConfigDict a recipe holds; the parts receive plain dicts."""
    from thkit.builder import build, build_model
    from thkit.recipe import load_recipe

    cfg = load_recipe("fomm/small", size=64)
    assert type(cfg.model).__name__ == "ConfigDict"
    model = build_model(cfg.model, image_size=cfg.image_size)
    assert type(model.keypoint_detector).__name__ == "FOMMKeypointDetector"
    disc = build("discriminator", cfg.discriminator, path="discriminator")
    assert sum(p.numel() for p in disc.parameters()) == sum(
        p.numel() for p in build("discriminator", cfg.discriminator.to_dict(), path="discriminator").parameters())


def test_a_size_the_hourglasses_cannot_pool_is_a_one_line_error():
    """fomm/vox256's 5-block hourglasses at scale 0.25 pool a 64 px image to nothing: the builder hands the size
    to the keypoint detector, whose error names the smallest size that works, at its recipe path."""
    with pytest.raises(RecipeError, match=r"^model\.keypoint_detector: .*image_size=64 px is too small .* use at "
                                          r"least 128 px"):
        thkit.create_model("fomm/vox256", size=64)
    r = run_cli("build", "fomm/vox256", "--size", "64")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "use at least 128 px" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def mcnet_official(tmp_path_factory):
    fx = torch.load(FIXTURES / "mcnet" / "tiny.pt", weights_only=True)
    path = tmp_path_factory.mktemp("mcnet") / "vox256-mcnet.pth.tar"
    torch.save(fx["state_dict"], path)
    return path


def test_a_checkpoint_that_fixes_other_settings_names_them(mcnet_official):
    """An official MCNet file given to a recipe with another memory size: the error names the setting, both values
    and the --cfg-options that make it fit (the converter's checkpoint_settings), not a list of tensor shapes."""
    with pytest.raises(CheckpointError) as e:
        thkit.create_model("mcnet/tiny_fixture", checkpoint=mcnet_official,
                           cfg_options={"model.compensator.mb_channel": 8})
    msg = str(e.value)
    assert "(an official mcnet checkpoint)" in msg and "\n" not in msg
    assert "model.compensator.mb_channel=16 (the recipe has 8)" in msg
    assert "pass --cfg-options model.compensator.mb_channel=16" in msg


def test_mcnet_animates_from_its_official_file_and_a_model_folder(mcnet_official, tmp_path):
    """MCNet through the front door: the official file is detected, converted into a folder, and both animate the
    same frames (deterministic noise at inference)."""
    from thkit.checkpoint import detect_format, torch_load

    assert detect_format(torch_load(mcnet_official)) == "mcnet"
    folder = thkit.convert_checkpoint(mcnet_official, tmp_path / "mcnet", recipe="mcnet/tiny_fixture")
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    driving = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    a = thkit.animate(source, driving, thkit.create_model("mcnet/tiny_fixture", checkpoint=mcnet_official))
    b = thkit.animate(source, driving, thkit.create_model(folder))
    assert a.shape == (2, 256, 256, 3) and np.array_equal(a, b)

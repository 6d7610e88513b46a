"""MCNet against the official code's outputs (shared/fixtures/official/mcnet/tiny.pt, README §2-4, §8).

The fixture's official state dicts go through the ``mcnet`` converter into ``recipes/mcnet/tiny_fixture.py`` (eval
mode).  Checked end to end (our keypoints -> our dense motion -> encoder -> warp -> memory compensator -> decoder):
keypoints, dense motion, every memory-unit internal at 32/64/128 px, the warped encoder maps, ``deformed``,
``prediction``, the keypoint-aware discriminator and the relative-motion animation.  Large official tensors are
compacted (README §1.1): every ``stride``-th element on the spatial dims plus sums.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES as OFFICIAL
from conftest import close_compact as _close
from conftest import load_strict_on_meta, official_copy, official_nets, official_zero_state_dicts

from thkit.builder import build, build_model
from thkit.convert import detect_method, detect_scores, get_converter
from thkit.errors import CheckpointError
from thkit.recipe import load_recipe
from thkit.transfer import transfer_motion

FIXTURES = OFFICIAL / "mcnet"

KP_ATOL = 1e-5
ATOL = 1e-4  # dense motion, memory internals, warped maps, deformed, prediction
KP_NORM_ATOL = 3e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def _img(u8: torch.Tensor) -> torch.Tensor:
    return u8.to(torch.float32) / 255.0


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURES / "tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def inputs(fx):
    return _img(fx["inputs"]["source_uint8"]), _img(fx["inputs"]["driving_uint8"])


@pytest.fixture(scope="module")
def nets(fx):
    model, disc = official_nets("mcnet", fx["state_dict"])
    model.compensator.record_internals = True
    return model, disc


@pytest.fixture(scope="module")
def e2e_run(nets, inputs):
    model, _ = nets
    src, drv = inputs
    with torch.no_grad():
        return model(src, drv)


# --- end to end against the official generator -------------------------------------------------------------
def test_keypoints(fx, e2e_run):
    for name in ("kp_source", "kp_driving"):
        for part in ("value", "jacobian"):
            _close(e2e_run[name][part], fx["outputs"][name][part], KP_ATOL, f"{name}.{part}")


def test_dense_motion(fx, e2e_run):
    g = fx["outputs"]["generator"]
    _close(e2e_run["deformation"], g["deformation"], ATOL, "deformation")
    _close(e2e_run["occlusion_map"][0], g["occlusion_map"], ATOL, "occlusion_map")
    _close(e2e_run["mask"], g["mask"], ATOL, "mask")
    _close(e2e_run["sparse_deformed"], g["sparse_deformed"], ATOL, "sparse_deformed")


def test_warped_encoder_maps(fx, e2e_run):
    """The warped, occluded encoder features (before the memory), official order coarse to fine."""
    g = fx["outputs"]["generator"]
    warped = e2e_run["warped_features"][::-1]
    for i, ref in enumerate(g["warped_encoder_maps"]):
        _close(warped[i], ref, ATOL, f"warped_encoder_maps[{i}]")
    _close(warped[0], g["Fwarp"], ATOL, "Fwarp")
    for i in range(3):
        _close(warped[i + 1], g[f"visual_encode_{i}"], ATOL, f"visual_encode_{i}")


@pytest.mark.parametrize("level, size", [(0, 32), (1, 64), (2, 128)])
def test_memory_unit_internals(fx, e2e_run, level, size):
    g = fx["outputs"]["generator"]
    rec = e2e_run["memory_internals"][level]
    for name in ("before", "feat", "query", "key", "value", "memory", "residual", "after"):
        _close(rec[name], g[f"visual_{name}_{size}"], ATOL, f"visual_{name}_{size}")
    _close(e2e_run["memory_features"][level], g["feat_list"][level], ATOL, f"feat_list[{level}]")
    _close(e2e_run["memory_values"][level], g["value_list"][level], ATOL, f"value_list[{level}]")
    if size == 32:
        _close(rec["after"], g["visual_reconstruction"], ATOL, "visual_reconstruction")


def test_deformed_and_prediction(fx, e2e_run):
    g = fx["outputs"]["generator"]
    _close(e2e_run["deformed"], g["deformed"], ATOL, "deformed")
    _close(e2e_run["prediction"], g["prediction"], ATOL, "prediction")


def test_discriminator(fx, nets):
    """Keypoint-aware discriminator: image + the 15 driving-keypoint heatmaps (quirk 15)."""
    _, disc = nets
    o = fx["outputs"]
    with torch.no_grad():
        for name, img in (("discriminator_on_prediction", o["generator"]["prediction"]),
                          ("discriminator_on_driving", _img(fx["inputs"]["driving_uint8"]))):
            res = disc(img, kp=o["kp_driving"])
            _close(res["prediction_map"]["1"], o[name]["prediction_map_1"], 1e-5, name)
            for i, ref in enumerate(o[name]["feature_maps_1"]):
                _close(res["feature_maps"]["1"][i], ref, 1e-5, f"{name} feature map {i}")


def test_animation_relative(fx, nets):
    """demo.make_animation(relative=True, adapt_movement_scale=True): batch-0 hull scale, relative Jacobians."""
    model, _ = nets
    a = fx["outputs"]["animation_relative"]
    src = _img(fx["inputs"]["source_uint8"])
    frames = [_img(torch.roll(fx["inputs"]["driving_uint8"], shifts=(2 * t, 3 * t), dims=(2, 3))) for t in range(3)]
    with torch.no_grad():
        cache = model.encode_source(src)
        kp_init = model.detect(frames[0])
        _close(kp_init["value"], a["kp_driving_initial"]["value"], KP_ATOL, "kp_driving_initial")
        for t, ref in enumerate(a["frames"]):
            kp_d = model.detect(frames[t])
            _close(kp_d["value"], ref["kp_driving"]["value"], KP_ATOL, f"frame {t} kp_driving")
            kp_norm = transfer_motion(cache["kp_source"], kp_d, kp_init, relative=True, relative_jacobian=True,
                                      adapt_movement_scale=True, official_batch0=True)
            _close(kp_norm["value"], ref["kp_norm"]["value"], KP_NORM_ATOL, f"frame {t} kp_norm.value")
            _close(kp_norm["jacobian"], ref["kp_norm"]["jacobian"], KP_NORM_ATOL, f"frame {t} kp_norm.jacobian")
            out = model.animate(cache, kp_norm)
            _close(out["deformation"], ref["deformation"], ATOL, f"frame {t} deformation")
            _close(out["occlusion_map"][0], ref["occlusion_map"], ATOL, f"frame {t} occlusion_map")
            _close(out["prediction"], ref["prediction"], ATOL, f"frame {t} prediction")


# --- noise injection -----------------------------------------------------------------------------------------
def _noisy_copy(nets, **settings):
    """The fixture model with a non-zero noise strength (so noise would show) and the given noise settings."""
    import copy

    model = copy.deepcopy(nets[0])
    with torch.no_grad():
        model.compensator.memory_conv.noise_weight.fill_(0.5)
    for k, v in settings.items():
        setattr(model.compensator, k, v)
    return model


def test_noise_deterministic_at_inference_and_seeded_when_asked(nets, inputs):
    src, drv = inputs
    src, drv = src[:1], drv[:1]
    model = _noisy_copy(nets)  # noise='auto' in eval: weight x zero noise
    with torch.no_grad():
        a, b = model(src, drv)["prediction"], model(src, drv)["prediction"]
        assert torch.equal(a, b)
        model.compensator.noise = "random"  # the official inference: fresh noise on every call
        r1, r2 = model(src, drv)["prediction"], model(src, drv)["prediction"]
        assert not torch.equal(r1, r2) and not torch.equal(r1, a)
        model.compensator.noise_seed = 7
        s1, s2 = model(src, drv)["prediction"], model(src, drv)["prediction"]
        assert torch.equal(s1, s2) and not torch.equal(s1, a)
        model.compensator.noise_seed = 8
        assert not torch.equal(model(src, drv)["prediction"], s1)
    model.compensator.noise, model.compensator.noise_seed = "auto", None
    model.train()  # training: noise as officially
    with torch.no_grad():
        t1, t2 = model(src, drv)["prediction"], model(src, drv)["prediction"]
    assert not torch.equal(t1, t2)
    with pytest.raises(ValueError, match="noise must be one of auto, zero, random"):
        model.compensator.noise = "gaussian"


# --- full size: parameter counts and the official key list ---------------------------------------------------
@pytest.fixture(scope="module")
def vox256():
    cfg = load_recipe("mcnet/vox256")
    with torch.device("meta"):  # shapes and counts only
        model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))
        disc = build("discriminator", cfg.discriminator.to_dict(), path="discriminator")
    return cfg, model, disc


def _count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def test_vox256_parameter_counts_equal_official(vox256):
    _, model, disc = vox256
    keys = json.loads((FIXTURES / "vox256_keys.json").read_text())
    nets = keys["networks"]
    generator = _count(model.motion) + _count(model.encoder) + _count(model.compensator) + _count(model.decoder)
    assert generator == 87_583_005 == nets["generator"]["num_parameters"]
    assert _count(model.compensator) == 25_049_289 == keys["sub_networks"]["generator.mbUnit"]
    assert _count(model.motion) == 37_796_433 == keys["sub_networks"]["generator.dense_motion_network"]
    assert _count(model.keypoint_detector) == 14_258_268 == nets["kp_detector"]["num_parameters"]
    assert _count(disc) == 2_774_209 == nets["discriminator"]["num_parameters"]
    comp = model.compensator
    assert comp.memory.shape == (1, 512, 32, 32) and comp.key_value.weight.shape == (4, 1024, 512, 3, 3)
    assert comp.key_value.attention.fc1.weight.shape == (129, 512, 1, 1)
    assert comp.style_mlp[0].weight.shape == (128, 512 + 30)


def test_vox256_official_keys_convert_completely(vox256):
    _, model, disc = vox256
    official = official_zero_state_dicts("mcnet")
    sds = get_converter("mcnet")(official)
    assert len(sds["model"]) == 247 + 75 and len(sds["discriminator"]) == 16
    load_strict_on_meta(sds, model=model, discriminator=disc)


# --- converter: detection, DDP prefixes, errors, recipe_from_official -------------------------------------------
_official = official_copy


def test_detected_among_the_converters_with_ddp_prefixes(fx):
    off = _official(fx)
    scores = dict((m, s) for m, s, _ in detect_scores(off))
    assert scores["mcnet"] == 1.0 and scores["fomm"] < 1.0  # the FOMM converter has no rule for mbUnit / resblock
    assert detect_method(off) == "mcnet"
    ddp = {net: {"module." + k: v for k, v in sd.items()} for net, sd in off.items()}
    ddp["epoch"] = 99
    assert detect_method(ddp) == "mcnet"
    plain, prefixed = get_converter("mcnet")(off), get_converter("mcnet")(ddp)
    assert plain.keys() == prefixed.keys()
    for dest in plain:
        assert plain[dest].keys() == prefixed[dest].keys()
        assert all(torch.equal(plain[dest][k], prefixed[dest][k]) for k in plain[dest])
    assert get_converter("mcnet").describe(ddp) == {"num_kp": 15, "mb_channel": 16, "mb_spatial": 32}


def test_converter_errors(fx):
    conv = get_converter("mcnet")
    off = _official(fx)
    del off["generator"]["mbUnit.styleconv.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys.*mbUnit\.styleconv\.weight"):
        conv(off)
    off = _official(fx)
    off["generator"]["mbUnit.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unknown keys.*mbUnit\.extra\.weight"):
        conv(off)
    off = _official(fx)
    off["generator"] = {k: v for k, v in off["generator"].items() if not k.startswith("mbUnit.norm_64")}
    with pytest.raises(CheckpointError, match=r"missing keys.*mbUnit\.norm_64"):
        conv(off)
    off = _official(fx)
    del off["kp_detector"]
    with pytest.raises(CheckpointError, match="missing networks.*kp_detector"):
        conv(off)


def test_checkpoint_given_to_another_recipe_names_the_method(fx, tmp_path):
    from thkit.api import create_model

    path = tmp_path / "mcnet.pth.tar"
    torch.save({**_official(fx), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"an official mcnet checkpoint\) does not fit recipe fomm/tiny_fixture"):
        create_model("fomm/tiny_fixture", checkpoint=path)
    model = create_model("mcnet/tiny_fixture", checkpoint=path)  # detected automatically
    assert model.meta["weights"] == str(path)


def test_recipe_from_official_fixture_config_is_the_tiny_fixture(fx):
    conv = get_converter("mcnet")
    rec = conv.recipe_from_official(fx["config"], fx["meta"]["fixture_patches"])
    tiny = load_recipe("mcnet/tiny_fixture")
    assert rec["model"] == json.loads(json.dumps(tiny.model.to_dict()))
    assert rec["discriminator"] == json.loads(json.dumps(tiny.discriminator.to_dict()))
    assert rec["image_size"] == 256


def test_recipe_from_official_vox256_config(fx):
    keys = json.loads((FIXTURES / "vox256_keys.json").read_text())
    conv = get_converter("mcnet")
    rec = conv.recipe_from_official(keys["model_params"], cli_args=keys["cli_args"])
    vox = load_recipe("mcnet/vox256")
    assert rec["model"] == json.loads(json.dumps(vox.model.to_dict()))
    # the yaml alone says 10 keypoints: the README's --kp_num 15 is required
    with pytest.raises(CheckpointError, match=r"num_kp is 10.*--kp_num 15"):
        conv.recipe_from_official({**keys["model_params"], "common_params": {
            **keys["model_params"]["common_params"], "num_kp": 10}}, cli_args={**keys["cli_args"], "kp_num": -1})
    with pytest.raises(CheckpointError, match=r"cli_args\.mbunit.*ExpendMemoryUnit"):
        conv.recipe_from_official(keys["model_params"], cli_args={**keys["cli_args"], "mbunit": "MemoryUnit"})
    with pytest.raises(CheckpointError, match=r"unknown key .*generator_params\.new_thing"):
        conv.recipe_from_official({**keys["model_params"], "generator_params": {
            **keys["model_params"]["generator_params"], "new_thing": 1}}, cli_args=keys["cli_args"])


# --- training: mcnet/small and the cross-paper recipe (MCNet's memory in FOMM's generator) ---------------------------
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> str:
    from thkit.datasets.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "heads64"
    write_synthetic_dataset(root, size=64, progress=False, videos=4, frames=6, seed=0)
    return str(root)


@pytest.mark.parametrize("recipe", ["mcnet/small", "mcnet/fomm_memory"])
def test_recipe_trains_a_few_steps(recipe, synth_root, tmp_path):
    from thkit.engine.runner import build_runner

    synth = dict(videos=4, frames=6, seed=0)
    opts = {
        "image_size": 64, "losses.perceptual.scales": [1, 0.5], "train_cfg.max_iters": 2, "train_cfg.val_interval": 100,
        "train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0,
        "train_dataloader.dataset.root": synth_root, "train_dataloader.dataset.synth": synth,
        "val_dataloader.dataset.root": synth_root, "val_dataloader.dataset.synth": synth,
        "default_hooks.logger.interval": 1, "default_hooks.checkpoint.interval": 100,
        "custom_hooks": [dict(type="TrainRecordsHook", plot=False)],
    }
    runner = build_runner(recipe, work_dir=str(tmp_path), cfg_options=opts)
    comp = runner.model.generator.compensator
    before = {k: v.detach().clone() for k, v in comp.state_dict().items()}
    runner.train()
    rows = [json.loads(line) for line in (tmp_path / "records" / "train.jsonl").read_text().splitlines()]
    terms = [r for r in rows if "memory_consistency" in r]
    assert len(terms) == 2 and all(float(r["memory_consistency"]) > 0 for r in terms)
    changed = [k for k, v in comp.state_dict().items() if not torch.equal(v, before[k])]
    assert "memory" in changed and "key_value.weight" in changed and "style_mlp.0.weight" in changed

"""``recipe_from_official``: the official configurations of FOMM, TPSMM and SMAC as thkit recipes (issue #12).

* the official vox-256 configurations (``vox256_keys.json['model_params']``) build networks with exactly the
  official parameter counts;
* the parity fixtures' configurations (``config`` + ``meta['fixture_patches']``) build models that, with the
  converted fixture weights loaded strictly, reproduce the official outputs end to end, with no hand-written
  recipe; the produced model equals what ``recipes/<method>/tiny_fixture.py`` resolves to;
* the recipes are JSON data, and a key the mapping does not know is an error naming it.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import FIXTURES

from thkit.builder import build, build_model
from thkit.checkpoint import load_state_dict_strict
from thkit.convert import get_converter
from thkit.errors import CheckpointError
from thkit.model_folder import plain
from thkit.recipe import load_recipe
from thkit.transfer import transfer_motion

METHODS = ("fomm", "tpsmm", "smac")
KP_ATOL = 1e-5  # keypoints, all three methods (tests/test_fomm.py, test_tpsmm.py, test_smac.py)
ATOL = 1e-4  # FOMM / TPSMM images and flows (as tests/test_fomm.py, test_tpsmm.py)
SMAC_E2E_ATOL = 5e-4  # SMAC end to end (tests/test_smac.py E2E_ATOL: the fixture's own float32 rounding is 3.8e-4)
SMAC_FLOW_ATOL = 1e-4  # SMAC end-to-end flows (tests/test_smac.py E2E_FLOW_ATOL)

pytestmark = pytest.mark.usefixtures("one_thread")


def _keys(method: str) -> dict:
    return json.loads((FIXTURES / method / "vox256_keys.json").read_text())


def _fixture(method: str) -> dict:
    return torch.load(FIXTURES / method / "tiny.pt", weights_only=True)


def _recipe_for_fixture(method: str, fx: dict) -> dict:
    """The fixture's configuration and patches; what the configuration cannot tell comes from the fixture's meta:
    its image size, and for FOMM that the official code ran on today's torch (align_corners False)."""
    conv = get_converter(method)
    options = {"smac": {}, "tpsmm": {"image_size": fx["meta"]["image_size"]},
               "fomm": {"image_size": fx["meta"]["image_size"], "align_corners": False}}[method]
    return conv.recipe_from_official(fx["config"], fx["meta"]["fixture_patches"], **options)


def _build(recipe: dict):
    """The model, discriminator and (TPSMM) AVD network of a recipe dict."""
    model = build_model(recipe["model"], image_size=recipe["image_size"])
    disc = build("discriminator", recipe["discriminator"], path="discriminator") if "discriminator" in recipe else None
    avd = build("motion", recipe["avd_network"], path="avd_network") if "avd_network" in recipe else None
    return model, disc, avd


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, what: str) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    err = (a.double() - b.double()).abs().max().item()
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"


# --- 1. the official vox-256 configurations: official parameter counts ---------------------------------------
def _official_counts(method: str, model, disc, avd) -> dict[str, int]:
    """thkit's parts summed as the official networks are cut (see tests/test_{fomm,tpsmm,smac}.py)."""
    kp, motion, enc, dec = (_count(getattr(model, n)) for n in ("keypoint_detector", "motion", "encoder", "decoder"))
    if method == "fomm":
        return {"kp_detector": kp, "generator": motion + enc + dec, "discriminator": _count(disc),
                "generator.dense_motion_network": motion}
    if method == "tpsmm":
        bg = _count(model.motion.bg_predictor)
        return {"kp_detector": kp, "dense_motion_network": motion - bg, "bg_predictor": bg,
                "inpainting_network": enc + dec, "avd_network": _count(avd)}
    return {"net_g": enc + _count(model.compensator) + dec, "motion_estimator": kp + motion, "net_d": _count(disc),
            "motion_estimator.kp_detector": kp, "motion_estimator.dense_motion_network": motion}


@pytest.mark.parametrize("method", METHODS)
def test_vox256_config_builds_the_official_parameter_counts(method):
    keys = _keys(method)
    recipe = get_converter(method).recipe_from_official(keys["model_params"])
    assert recipe["image_size"] == 256
    with torch.device("meta"):  # shapes and counts only
        model, disc, avd = _build(recipe)
    official = {net: info["num_parameters"] for net, info in keys["networks"].items()}
    official.update(keys.get("sub_networks", {}))
    assert _official_counts(method, model, disc, avd) == official


@pytest.mark.parametrize("method", METHODS)
def test_vox256_config_gives_the_vox256_recipe(method):
    """The official vox-256 configuration maps to ``recipes/<method>/vox256.py``, every entry."""
    recipe = get_converter(method).recipe_from_official(_keys(method)["model_params"])
    assert recipe == plain(load_recipe(f"{method}/vox256").to_dict())


# --- 2. the parity fixtures: no hand-written recipe ------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_fixture_config_gives_the_tiny_fixture_model(method):
    """The produced recipe equals ``recipes/<method>/tiny_fixture.py`` on the model, the discriminator, the AVD
    network and the image size.  Elsewhere: FOMM's tiny_fixture trims the perceptual pyramid to [1, 0.5, 0.25] by
    hand, while the mapped recipe keeps vox256's four scales, which the loss trims to the image size it is given;
    SMAC's tiny_fixture keeps the stale top-level variables motion_dim / appearance_dim = 32 / 256 (and adds
    ``dim``), the mapped recipe sets them to the fixture's 16."""
    fx = _fixture(method)
    recipe = _recipe_for_fixture(method, fx)
    tiny = plain(load_recipe(f"{method}/tiny_fixture").to_dict())
    assert recipe["model"] == tiny["model"]
    for key in ("discriminator", "avd_network", "image_size", "input_range", "motion_transfer"):
        assert recipe.get(key) == tiny.get(key), key
    assert recipe["image_size"] == fx["meta"]["image_size"]
    different = {k for k in set(recipe) | set(tiny) if recipe.get(k) != tiny.get(k)}
    assert different == {"fomm": {"losses"}, "tpsmm": set(), "smac": {"motion_dim", "appearance_dim", "dim"}}[method]
    if method == "fomm":
        assert recipe["losses"]["equivariance"] == tiny["losses"]["equivariance"]  # align_corners False in both
        assert recipe["losses"]["perceptual"]["scales"] == [1, 0.5, 0.25, 0.125]


@pytest.fixture(scope="module")
def fixture_nets():
    """Per method: (fixture, model, discriminator, AVD network) built from the mapped recipe, with the converted
    fixture weights loaded strictly, in eval mode."""
    cache = {}

    def get(method: str):
        if method not in cache:
            fx = _fixture(method)
            model, disc, avd = _build(_recipe_for_fixture(method, fx))
            sds = get_converter(method).convert(fx["state_dict"])
            load_state_dict_strict(model, sds["model"], "model")
            for net, name in ((disc, "discriminator"), (avd, "avd_network")):
                assert (net is None) == (name not in sds), name
                if net is not None:
                    load_state_dict_strict(net, sds[name], name)
                    net.eval()
            cache[method] = fx, model.eval(), disc, avd
        return cache[method]

    return get


@torch.no_grad()
def test_fomm_fixture_end_to_end(fixture_nets):
    fx, model, disc, _ = fixture_nets("fomm")
    inp, o = fx["inputs"], fx["outputs"]
    for name, img in (("kp_source", inp["source"]), ("kp_driving", inp["driving"])):
        kp = model.detect(img)
        _close(kp["value"], o[name]["value"], KP_ATOL, f"{name}.value")
        _close(kp["jacobian"], o[name]["jacobian"], KP_ATOL, f"{name}.jacobian")
    out = model(inp["source"], inp["driving"])
    for key in ("mask", "deformed", "prediction"):
        _close(out[key], o["generator"][key], ATOL, key)
    _close(out["occlusion_map"][0], o["generator"]["occlusion_map"], ATOL, "occlusion_map")
    _close(out["deformation"], o["dense_motion_network"]["deformation"], ATOL, "deformation")
    d = disc(inp["driving"])  # on the prediction see test_fomm.py: float32 amplification in the last block
    ref = o["discriminator_on_driving"]
    for i, (a, b) in enumerate(zip(d["feature_maps"]["1"], ref["feature_maps_1"], strict=True)):
        _close(a, b, ATOL, f"discriminator feature_maps[{i}]")
    _close(d["prediction_map"]["1"], ref["prediction_map_1"], ATOL, "prediction_map")
    # relative animation, frame 2 (demo.make_animation, relative + adapt_movement_scale, batch-0 scale)
    a = o["animation_relative"]
    video = inp["driving_video"]
    cache = model.encode_source(inp["source"])
    kp_norm = transfer_motion(cache["kp_source"], model.detect(video[:, :, 2]), model.detect(video[:, :, 0]),
                              relative=True, relative_jacobian=True, adapt_movement_scale=True, official_batch0=True)
    _close(kp_norm["value"], a["frames"][2]["kp_norm"]["value"], KP_ATOL, "frame 2 kp_norm")
    _close(model.animate(cache, kp_norm)["prediction"], a["frames"][2]["prediction"], ATOL, "frame 2 prediction")


@torch.no_grad()
def test_tpsmm_fixture_end_to_end(fixture_nets):
    fx, model, disc, avd = fixture_nets("tpsmm")
    assert disc is None  # TPSMM trains no discriminator
    inp, o = fx["inputs"], fx["outputs"]
    out = model(inp["source"], inp["driving"])  # reconstruction.py: keypoints, background affine, motion, inpainting
    _close(out["kp_source"]["value"], o["kp_source"]["fg_kp"], KP_ATOL, "kp_source")
    _close(out["kp_driving"]["value"], o["kp_driving"]["fg_kp"], KP_ATOL, "kp_driving")
    _close(out["bg_param"], o["bg_param"], 1e-5, "bg_param")
    _close(out["deformation"], o["dense_motion_reconstruction"]["deformation"], ATOL, "deformation")
    occlusions = o["dense_motion_reconstruction"]["occlusion_map"]
    for i, (x, y) in enumerate(zip(out["occlusion_map"], occlusions, strict=True)):
        _close(x, y, ATOL, f"occlusion_map[{i}]")
    _close(out["deformed"], o["inpainting_reconstruction"]["deformed"], ATOL, "deformed")
    _close(out["prediction"], o["inpainting_reconstruction"]["prediction"], ATOL, "prediction")
    # demo mode 'avd' on frame 2
    ref = o["animation_avd_frame2"]
    cache = model.encode_source(inp["source"])
    kp_norm = avd(cache["kp_source"], model.detect(inp["driving_video"][:, :, 2]))
    _close(kp_norm["value"], ref["kp_norm"]["fg_kp"], KP_ATOL, "avd kp_norm")
    _close(model.animate(cache, kp_norm)["prediction"], ref["prediction"], ATOL, "avd prediction")


def _smac_image(u8: torch.Tensor) -> torch.Tensor:
    return (u8.to(torch.float32) / 255.0 - 0.5) / 0.5


@torch.no_grad()
def test_smac_fixture_end_to_end(fixture_nets):
    fx, model, disc, _ = fixture_nets("smac")
    src, drv = _smac_image(fx["inputs"]["source_uint8"]), _smac_image(fx["inputs"]["driving_uint8"])
    me, g = fx["outputs"]["motion_estimator"], fx["outputs"]["net_g_inference"]
    out = model(src, drv)
    for name in ("kp_driving", "kp_source"):
        _close(out[name]["value"], me[name]["value"], KP_ATOL, f"{name}.value")
        _close(out[name]["jacobian"], me[name]["jacobian"], KP_ATOL, f"{name}.jacobian")
    _close(out["deformation"], me["deformation"], SMAC_FLOW_ATOL, "motion deformation")
    _close(out["occlusion_map"][0], me["occlusion_map"], SMAC_FLOW_ATOL, "motion occlusion_map")
    assert len(out["deformation_list"]) == len(g["deformation_list"]) == 5
    for i, (a, b) in enumerate(zip(out["deformation_list"], g["deformation_list"], strict=True)):
        _close(a, b, SMAC_FLOW_ATOL, f"deformation_list[{i}]")
    _close(out["prediction"], g["out"], SMAC_E2E_ATOL, "out")  # stored in full (README §1.1)
    for name, img in (("net_d_on_out", g["out"]), ("net_d_on_driving", drv)):
        _close(disc(img)["prediction_map"]["1"], fx["outputs"][name], 1e-5, name)


# --- 3. plain data; unknown or unsupported keys are named ---------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_recipes_are_json_data(method):
    fx = _fixture(method)
    for recipe in (get_converter(method).recipe_from_official(_keys(method)["model_params"]),
                   _recipe_for_fixture(method, fx)):
        assert json.loads(json.dumps(recipe)) == recipe  # no tuples, no objects


#: (method, where to add an unknown key in the fixture's configuration, its dotted name in the message; FOMM's and
#: TPSMM's fixture configurations are the yaml's model_params)
UNKNOWN = [
    ("fomm", ("generator_params", "dense_motion_params"),
     "model_params.generator_params.dense_motion_params.extra_width"),
    ("fomm", ("kp_detector_params",), "model_params.kp_detector_params.extra_width"),
    ("fomm", (), "model_params.extra_width"),
    ("tpsmm", ("dense_motion_params",), "model_params.dense_motion_params.extra_width"),
    ("tpsmm", ("common_params",), "model_params.common_params.extra_width"),
    ("smac", ("network_g",), "network_g.extra_width"),
    ("smac", ("network_motion_estimator", "kp_detector_params"),
     "network_motion_estimator.kp_detector_params.extra_width"),
    ("smac", ("network_d",), "network_d.extra_width"),
]


@pytest.mark.parametrize("method,where,name", UNKNOWN)
def test_unknown_architecture_key_is_named(method, where, name):
    fx = _fixture(method)
    cfg = copy.deepcopy(fx["config"])
    section = cfg
    for key in where:
        section = section[key]
    section["extra_width"] = 3
    with pytest.raises(CheckpointError, match=f"unknown key {name.replace('.', r'[.]')}:"):
        get_converter(method).recipe_from_official(cfg, fx["meta"]["fixture_patches"])


@pytest.mark.parametrize("method", METHODS)
def test_unknown_patch_is_named(method):
    fx = _fixture(method)
    patches = {**fx["meta"]["fixture_patches"], "HIDDEN_WIDTH": 7}
    with pytest.raises(CheckpointError, match=r"unknown key patches\.HIDDEN_WIDTH"):
        get_converter(method).recipe_from_official(fx["config"], patches)


def test_unsupported_official_values_are_named():
    fx = _fixture("smac")
    cfg = copy.deepcopy(fx["config"])
    cfg["network_g"]["connect_list"] = ["128", "256"]
    with pytest.raises(CheckpointError, match=r"network_g\.connect_list: \['128', '256'\]"):
        get_converter("smac").recipe_from_official(cfg, fx["meta"]["fixture_patches"])
    with pytest.raises(CheckpointError, match=r"network_g\.nf: .*hard-codes \[256, 128, 128, 64\]"):
        get_converter("smac").recipe_from_official(fx["config"])  # the tiny widths need the fixture's patch
    cfg = copy.deepcopy(fx["config"])
    cfg["network_g"]["num_kp"] = 7
    with pytest.raises(CheckpointError, match=r"network_g\.num_kp"):
        get_converter("smac").recipe_from_official(cfg, fx["meta"]["fixture_patches"])
    fx = _fixture("tpsmm")
    with pytest.raises(CheckpointError, match=r"patches\.bg_predictor_conv1_out_channels"):
        get_converter("tpsmm").recipe_from_official(fx["config"], {**fx["meta"]["fixture_patches"],
                                                                   "bg_predictor_conv1_out_channels": 8})
    cfg = copy.deepcopy(fx["config"])
    cfg["generator_params"]["max_features"] = "512"
    with pytest.raises(CheckpointError, match=r"generator_params\.max_features: expected an integer"):
        get_converter("tpsmm").recipe_from_official(cfg, fx["meta"]["fixture_patches"])
    cfg = copy.deepcopy(fx["config"])
    del cfg["common_params"]["num_tps"]
    with pytest.raises(CheckpointError, match=r"common_params\.num_tps: missing"):
        get_converter("tpsmm").recipe_from_official(cfg, fx["meta"]["fixture_patches"])


# --- the whole official yaml, official defaults, options ------------------------------------------------------------
def test_fomm_whole_yaml_and_official_defaults():
    """The whole yaml (as config/taichi-adv-256.yaml is laid out): frame_shape -> image_size,
    normalization_params -> motion_transfer, training sections ignored; the discriminator without ``sn`` gets the
    official default (no spectral norm)."""
    conv = get_converter("fomm")
    model_params = copy.deepcopy(_keys("fomm")["model_params"])
    model_params["discriminator_params"].pop("sn")
    model_params["discriminator_params"]["use_kp"] = True
    whole = {"dataset_params": {"root_dir": "data/vox", "frame_shape": [128, 128, 3]},
             "model_params": model_params,
             "train_params": {"num_epochs": 100, "loss_weights": {"generator_gan": 1}},
             "reconstruction_params": {"num_videos": 1000}, "visualizer_params": {"kp_size": 5},
             "animate_params": {"num_pairs": 50, "normalization_params": {
                 "adapt_movement_scale": True, "use_relative_movement": True, "use_relative_jacobian": False}}}
    recipe = conv.recipe_from_official(whole)
    assert recipe["image_size"] == 128
    assert recipe["motion_transfer"] == dict(relative=True, relative_jacobian=False, adapt_movement_scale=True)
    assert recipe["discriminator"]["sn"] is False and recipe["discriminator"]["use_kp"] is True
    assert recipe["model"] == conv.recipe_from_official(model_params)["model"]
    assert recipe["model"]["motion"]["align_corners"] is True  # the released weights' convention (torch 1.0)
    with pytest.raises(CheckpointError, match="unknown key optimizer_params"):
        conv.recipe_from_official({**whole, "optimizer_params": {}})
    # official defaults where the configuration states nothing: KPDetector scale_factor 1, no Jacobians
    model_params = copy.deepcopy(_keys("fomm")["model_params"])
    del model_params["kp_detector_params"]["scale_factor"], model_params["common_params"]["estimate_jacobian"]
    del model_params["discriminator_params"]
    recipe = conv.recipe_from_official(model_params)
    assert recipe["model"]["keypoint_detector"]["scale_factor"] == 1
    assert recipe["model"]["keypoint_detector"]["estimate_jacobian"] is False
    assert "discriminator" not in recipe

"""TPSMM parts against the official code's outputs (shared/fixtures/official/tpsmm/tiny.pt), after conversion."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import official_zero_state_dicts

from thkit.builder import build, build_model
from thkit.checkpoint import load_state_dict_strict
from thkit.convert import get_converter
from thkit.errors import CheckpointError
from thkit.recipe import load_recipe
from thkit.transfer import transfer_motion

ATOL = 1e-4  # features, flows, images (largest measured: 3.0e-5, relative-animation prediction; TPS solve rounding)
KP_ATOL = 1e-5  # keypoints (measured 2.4e-7; 1.0e-6 with oneDNN limited to SSE4.1 kernels)


def maxdiff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    return torch.load(fixtures_dir / "tpsmm" / "tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def nets(fx):
    """The tiny recipe's model and AVD network, loaded with the converted fixture weights, in eval mode."""
    cfg = load_recipe("tpsmm/tiny_fixture")
    model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))
    avd = build("motion", cfg.avd_network.to_dict(), path="avd_network")
    sds = get_converter("tpsmm")(fx["state_dict"])
    load_state_dict_strict(model, sds["model"], "model")
    load_state_dict_strict(avd, sds["avd_network"], "avd_network")
    return model.eval(), avd.eval()


def kp(t):
    return {"value": t}


def assert_close(ours, ref, atol=ATOL, what=""):
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    err = maxdiff(ours, ref)
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"


def assert_occlusions(ours, ref, what):
    assert len(ours) == len(ref) == 4
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert_close(a, b, what=f"{what}[{i}]")


# -- parts ------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_keypoints(fx, nets):
    model, _ = nets
    for name in ("source", "driving"):
        out = model.keypoint_detector(fx["inputs"][name])
        assert set(out) == {"value"}
        assert_close(out["value"], fx["outputs"][f"kp_{name}"]["fg_kp"], KP_ATOL, f"kp_{name}")


@torch.no_grad()
def test_background_affine(fx, nets):
    model, _ = nets
    bg = model.motion.bg_predictor(fx["inputs"]["source"], fx["inputs"]["driving"])
    assert_close(bg, fx["outputs"]["bg_param"], 1e-5, "bg_param")
    assert torch.equal(bg[:, 2], torch.tensor([[0.0, 0.0, 1.0]] * 2))


@torch.no_grad()
def test_dense_motion_intermediates(fx, nets):
    model, _ = nets
    motion = model.motion
    ref = fx["outputs"]["intermediates"]["dense_motion_network"]
    o = fx["outputs"]
    ks, kd = kp(o["kp_source"]["fg_kp"]), kp(o["kp_driving"]["fg_kp"])
    small = motion.downsample(fx["inputs"]["source"])
    assert_close(small, ref["source_downsampled"], 1e-6, "source_downsampled")
    assert_close(motion.heatmap_representation((16, 16), ks, kd), ref["heatmap_representation"], 1e-6, "heatmaps")
    trans = motion.transformations((16, 16), ks, kd, o["bg_param"])
    assert_close(trans, ref["transformations"], 2e-5, "transformations")


@torch.no_grad()
def test_tps_regularisation_matters_and_kornia_differs(fx):
    """Why thkit has its own TPS: without the official 0.01 I term (kornia has none) the warps differ."""
    from kornia.geometry.transform import get_tps_transform, warp_points_tps

    from thkit.layers import make_coordinate_grid
    from thkit.motion.tpsmm import ThinPlateSpline

    o = fx["outputs"]
    ref = o["intermediates"]["dense_motion_network"]["transformations"][:, 1:]
    kd = o["kp_driving"]["fg_kp"].view(2, 10, 5, 2)
    ks = o["kp_source"]["fg_kp"].view(2, 10, 5, 2)
    assert maxdiff(ThinPlateSpline(kd, ks).warp_grid(16, 16), ref) < 2e-5
    assert maxdiff(ThinPlateSpline(kd, ks, regularisation=0.0).warp_grid(16, 16), ref) > 1e-2
    grid = make_coordinate_grid(16, 16).reshape(1, -1, 2).expand(20, -1, -1)
    kernel_w, affine_w = get_tps_transform(kd.reshape(20, 5, 2), ks.reshape(20, 5, 2))
    kornia = warp_points_tps(grid, kd.reshape(20, 5, 2), kernel_w, affine_w).reshape(2, 10, 16, 16, 2)
    assert maxdiff(kornia, ref) > 1e-2


@torch.no_grad()
def test_dense_motion_reconstruction(fx, nets):
    model, _ = nets
    o = fx["outputs"]
    ref = o["dense_motion_reconstruction"]
    out = model.motion(fx["inputs"]["source"], kp(o["kp_source"]["fg_kp"]), kp(o["kp_driving"]["fg_kp"]),
                       driving=fx["inputs"]["driving"])
    assert_close(out["bg_param"], o["bg_param"], 1e-5, "bg_param")
    for key in ("deformed_source", "contribution_maps", "deformation"):
        assert_close(out[key], ref[key], what=key)
    assert_occlusions(out["occlusion_map"], ref["occlusion_map"], "occlusion_map")


# -- the whole model ---------------------------------------------------------------------------------------
@torch.no_grad()
def test_reconstruction_path(fx, nets):
    """model(source, driving): keypoints, background affine, dense motion, inpainting (reconstruction.py)."""
    model, _ = nets
    src, drv = fx["inputs"]["source"], fx["inputs"]["driving"]
    o = fx["outputs"]
    out = model(src, drv)
    assert_close(out["kp_driving"]["value"], o["kp_driving"]["fg_kp"], KP_ATOL, "kp_driving")
    assert_close(out["bg_param"], o["bg_param"], 1e-5, "bg_param")
    for key in ("deformed_source", "contribution_maps", "deformation"):
        assert_close(out[key], o["dense_motion_reconstruction"][key], what=key)
    assert_occlusions(out["occlusion_map"], o["dense_motion_reconstruction"]["occlusion_map"], "occlusion_map")
    ref = o["inpainting_reconstruction"]
    assert_close(out["deformed"], ref["deformed"], what="deformed")
    assert_close(out["prediction"], ref["prediction"], what="prediction")
    maps = out["warped_encoder_maps"]  # thkit: fine to coarse; official: coarse to fine
    assert [tuple(m.shape) for m in maps] == [tuple(m.shape) for m in reversed(ref["warped_encoder_maps"])]
    for i, (a, b) in enumerate(zip(maps, reversed(ref["warped_encoder_maps"]))):
        assert_close(a, b, what=f"warped_encoder_maps[{i}]")

    enc = model.encoder.occluded_features(drv, out["occlusion_map"])
    for i, (a, b) in enumerate(zip(enc, o["inpainting_get_encode_driving"])):
        assert_close(a, b, what=f"get_encode[{i}]")
    assert len(enc) == len(o["inpainting_get_encode_driving"]) == 4


@torch.no_grad()
def test_standard_mode_without_background(fx, nets):
    """demo.py mode 'standard': absolute driving keypoints, bg_param=None (animate without a driving image)."""
    model, _ = nets
    src, drv = fx["inputs"]["source"], fx["inputs"]["driving"]
    ref = fx["outputs"]["standard_no_bg"]
    cache = model.encode_source(src)
    out = model.animate(cache, model.detect(drv))
    assert "bg_param" not in out
    for key in ("deformation", "contribution_maps", "prediction"):
        assert_close(out[key], ref[key], what=key)
    assert_occlusions(out["occlusion_map"], ref["occlusion_map"], "occlusion_map")


@torch.no_grad()
def test_animation_relative(fx, nets):
    """demo.py mode 'relative': relative_kp with adapt-scale from batch element 0, no Jacobians.

    The prediction is checked twice: the same network in float64 (kernel-independent) against the official
    output within ATOL (measured 5.7e-5: the official float32 output's own rounding), and our float32 run
    within 2 * ATOL: the official rounding plus ours, which depends on the CPU kernels torch picks (measured
    2.1e-5 with oneDNN, 1.1e-4 with oneDNN off or limited to SSE4.1 kernels, on frame 1).
    """
    model, _ = nets
    model64 = copy.deepcopy(model).double()
    ref = fx["outputs"]["animation_relative"]
    settings = dict(load_recipe("tpsmm/tiny_fixture").motion_transfer)
    assert settings == dict(relative=True, relative_jacobian=False, adapt_movement_scale=True)
    video = fx["inputs"]["driving_video"]  # (B, C, T, H, W)
    cache = model.encode_source(fx["inputs"]["source"])
    cache64 = model64.encode_source(fx["inputs"]["source"].double())
    kp_init = model.detect(video[:, :, 0])
    kp_init64 = model64.detect(video[:, :, 0].double())
    assert_close(kp_init["value"], ref["kp_driving_initial"]["fg_kp"], KP_ATOL, "kp_driving_initial")
    for t, frame_ref in enumerate(ref["frames"]):
        kp_d = model.detect(video[:, :, t])
        assert_close(kp_d["value"], frame_ref["kp_driving"]["fg_kp"], KP_ATOL, f"frame {t} kp_driving")
        kp_norm = transfer_motion(cache["kp_source"], kp_d, kp_init, **settings, official_batch0=True)
        assert_close(kp_norm["value"], frame_ref["kp_norm"]["fg_kp"], KP_ATOL, f"frame {t} kp_norm")
        out = model.animate(cache, kp_norm)
        assert_close(out["deformation"], frame_ref["deformation"], what=f"frame {t} deformation")
        assert_occlusions(out["occlusion_map"], frame_ref["occlusion_map"], f"frame {t} occlusion_map")
        assert_close(out["prediction"], frame_ref["prediction"], 2 * ATOL, f"frame {t} prediction")
        kp_norm64 = transfer_motion(cache64["kp_source"], model64.detect(video[:, :, t].double()), kp_init64,
                                    **settings, official_batch0=True)
        out64 = model64.animate(cache64, kp_norm64)
        assert_close(out64["deformation"], frame_ref["deformation"], what=f"frame {t} deformation (float64)")
        assert_close(out64["prediction"], frame_ref["prediction"], what=f"frame {t} prediction (float64)")


@torch.no_grad()
def test_animation_avd_frame2(fx, nets):
    model, avd = nets
    ref = fx["outputs"]["animation_avd_frame2"]
    cache = model.encode_source(fx["inputs"]["source"])
    kp_d = model.detect(fx["inputs"]["driving_video"][:, :, 2])
    kp_norm = avd(cache["kp_source"], kp_d)
    assert_close(kp_norm["value"], ref["kp_norm"]["fg_kp"], 1e-5, "avd kp_norm")
    assert_close(model.animate(cache, kp_norm)["prediction"], ref["prediction"], what="avd prediction")


def test_warped_encoder_maps_gradient_reaches_the_flow_only(fx, nets):
    """As officially: the warp loss trains the motion (through the flow), not the encoder or the occlusion."""
    model, _ = nets
    out = model(fx["inputs"]["source"], fx["inputs"]["driving"])
    maps = out["warped_encoder_maps"]
    assert all(m.requires_grad for m in maps)
    loss = sum(m.abs().mean() for m in maps)
    enc = [p for p in model.encoder.parameters()]
    grads = torch.autograd.grad(loss, [model.motion.maps.weight, model.motion.occlusion[0].weight, *enc],
                                allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0  # contribution maps -> flow
    assert grads[1] is None  # occlusion detached
    assert all(g is None for g in grads[2:])  # encoder detached


def test_dropout_softmax_keeps_background_and_normalises():
    from thkit.motion.tpsmm import dropout_softmax

    logits = torch.randn(3, 11, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = dropout_softmax(logits, 0.5, generator=g)
    dropped = (out.amax(dim=(2, 3)) == 0)
    assert not dropped[:, 0].any() and dropped[:, 1:].any()
    assert torch.allclose(out.sum(1), torch.ones(3, 4, 4), atol=1e-5)
    assert torch.allclose(dropout_softmax(logits, 0.0), torch.softmax(logits, 1), atol=1e-5)


# -- sizes and parameter counts ---------------------------------------------------------------------------
def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vox256_parameter_counts_equal_the_official_ones():
    cfg = load_recipe("tpsmm/vox256")
    model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))
    avd = build("motion", cfg.avd_network.to_dict(), path="avd_network")
    bg = _count(model.motion.bg_predictor)
    assert _count(model.keypoint_detector) == 11_227_812
    assert _count(model.motion) - bg == 37_941_397
    assert bg == 11_188_998
    assert _count(model.encoder) + _count(model.decoder) == 24_737_283
    assert _count(avd) == 2_583_652


@torch.no_grad()
def test_other_image_size_runs(nets):
    """No part hard-codes the image size (the tiny model at 128x64; sides must be multiples of 64 here, as
    the 4-block hourglass works at a quarter of the size)."""
    model, _ = nets
    out = model(torch.rand(1, 3, 128, 64), torch.rand(1, 3, 128, 64))
    assert out["prediction"].shape == (1, 3, 128, 64)
    assert [tuple(o.shape[2:]) for o in out["occlusion_map"]] == [(16, 8), (32, 16), (64, 32), (128, 64)]


# -- converter ----------------------------------------------------------------------------------------------
def test_vox256_keys_convert_completely_into_the_vox256_recipe(fixtures_dir):
    keys = json.loads((fixtures_dir / "tpsmm" / "vox256_keys.json").read_text())
    official = official_zero_state_dicts("tpsmm")
    official["epoch"] = 100
    official["optimizer"] = {"state": {}, "param_groups": []}
    sds = get_converter("tpsmm")(official)
    assert set(sds) == {"model", "avd_network"}
    cfg = load_recipe("tpsmm/vox256")
    model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))
    avd = build("motion", cfg.avd_network.to_dict(), path="avd_network")
    load_state_dict_strict(model, sds["model"], "model")
    load_state_dict_strict(avd, sds["avd_network"], "avd_network")
    n_official = sum(info["num_state_tensors"] for info in keys["networks"].values())
    assert len(sds["model"]) + len(sds["avd_network"]) == n_official


def _tiny_official(fx):
    return {net: dict(sd) for net, sd in fx["state_dict"].items()}


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.pop("kp_detector"), "missing networks in official checkpoint: kp_detector"),
    (lambda o: o.__setitem__("generator", {}), "unknown entries in official checkpoint: generator"),
    (lambda o: o["dense_motion_network"].__setitem__("mask.weight", torch.zeros(1)),
     "unknown keys in official checkpoint: dense_motion_network.mask.weight"),
    (lambda o: o["inpainting_network"].pop("resblock.3.norm1.bias"),
     "missing keys in official checkpoint: inpainting_network.resblock.3.norm1.bias"),
    (lambda o: [o["inpainting_network"].pop(k) for k in list(o["inpainting_network"]) if k.startswith("resblock.5.")],
     "resblock has 5 blocks but down_blocks has 3"),
    (lambda o: o["kp_detector"].pop("fg_encoder.layer3.1.bn2.running_var"),
     "kp_detector.fg_encoder.layer3.1.bn2.running_var"),
    (lambda o: [o["bg_predictor"].pop(k) for k in list(o["bg_predictor"]) if ".layer2.0.downsample." in k],
     "bg_predictor.bg_encoder.layer2.0.downsample.*"),
    (lambda o: o["avd_network"].__setitem__("decoder.10.weight", torch.zeros(1)),
     "unknown keys in official checkpoint: avd_network.decoder.10.weight"),
    (lambda o: [o["dense_motion_network"].pop(k) for k in ("occlusion.1.weight", "occlusion.1.bias")],
     "dense_motion_network.occlusion.1.*"),
])
def test_converter_errors_name_the_problem(fx, mutate, message):
    official = _tiny_official(fx)
    mutate(official)
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.").replace("*", r"\*")):
        get_converter("tpsmm")(official)


def test_converter_optional_networks(fx):
    official = _tiny_official(fx)
    del official["bg_predictor"], official["avd_network"]
    sds = get_converter("tpsmm")(official)
    assert set(sds) == {"model"}
    assert not any(k.startswith("motion.bg_predictor.") for k in sds["model"])
    cfg = load_recipe("tpsmm/tiny_fixture", {"model.motion.background_predictor": None})
    load_state_dict_strict(build_model(cfg.model.to_dict(), image_size=cfg.get("image_size")), sds["model"], "model")
    with pytest.raises(CheckpointError, match="expected a checkpoint dict"):
        get_converter("tpsmm")([1, 2])


@torch.no_grad()
def test_official_file_loads_through_the_checkpoint_api(fx, tmp_path):
    """An official-layout file: auto-detected as TPSMM, converted on the fly, or converted to a thkit file."""
    from thkit.checkpoint import convert_file, detect_format, load_into

    official = _tiny_official(fx)
    official["epoch"] = 3
    path = tmp_path / "official.pth.tar"
    torch.save(official, path)
    assert detect_format(official) == "tpsmm"
    cfg = load_recipe("tpsmm/tiny_fixture")
    model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size")).eval()
    avd = build("motion", cfg.avd_network.to_dict(), path="avd_network").eval()
    load_into(model, path, extra={"avd_network": avd})
    out = model(fx["inputs"]["source"], fx["inputs"]["driving"])
    assert_close(out["prediction"], fx["outputs"]["inpainting_reconstruction"]["prediction"], what="prediction")
    thkit_path = convert_file(str(path), tmp_path / "thkit.pt", method="tpsmm")
    model2 = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size")).eval()
    load_into(model2, thkit_path)
    assert torch.equal(model2(fx["inputs"]["source"], fx["inputs"]["driving"])["prediction"], out["prediction"])


def test_bad_inputs_are_named(nets):
    model, _ = nets
    src = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"expected keypoints of shape \(1, 50, 2\)"):
        model.motion(src, {"value": torch.zeros(1, 48, 2)}, {"value": torch.zeros(1, 48, 2)})
    with pytest.raises(ValueError, match="bg_param must be"):
        model.motion(src, {"value": torch.zeros(1, 50, 2)}, {"value": torch.zeros(1, 50, 2)},
                     bg_param=torch.eye(2)[None])
    with pytest.raises(ValueError, match="expects 4 warped features"):
        model.decoder([torch.zeros(1, 4, 64, 64)], {})

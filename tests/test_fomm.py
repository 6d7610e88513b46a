"""FOMM parts against the official code's outputs (shared/fixtures/official/fomm/tiny.pt, README §5).

The fixture's official state dicts go through the ``fomm`` converter into ``recipes/fomm/tiny_fixture.py``
(align_corners=False, as the official code on today's torch), evaluated in eval mode.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES as OFFICIAL
from conftest import load_strict_on_meta, official_copy, official_nets, official_zero_state_dicts

from thkit.builder import build, build_model
from thkit.convert import get_converter
from thkit.errors import CheckpointError
from thkit.motion.fomm import heatmap_to_keypoints, spatial_softmax
from thkit.recipe import load_recipe
from thkit.transfer import hull_area, movement_scale, transfer_motion

FIXTURES = OFFICIAL / "fomm"  # ../shared/fixtures/official beside the repository

ATOL = 1e-4  # features, images, flows
KP_ATOL = 1e-5  # keypoints and Jacobians (measured: <= 4e-6)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a.double() - b.double()).abs().max().item()


def _close(a, b, atol, what):
    e = _err(a, b)
    assert e <= atol, f"{what}: max abs error {e:.3g} > {atol:g}"


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURES / "tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def nets(fx):
    return official_nets("fomm", fx["state_dict"])


def test_fixture_config_matches_recipe(fx):
    cfg = load_recipe("fomm/tiny_fixture")
    c = fx["config"]
    kp, gen = c["kp_detector_params"], c["generator_params"]
    m = cfg.model
    assert m.keypoint_detector.num_kp == c["common_params"]["num_kp"]
    assert (m.keypoint_detector.block_expansion, m.keypoint_detector.max_features, m.keypoint_detector.num_blocks) == (
        kp["block_expansion"], kp["max_features"], kp["num_blocks"])
    dm = gen["dense_motion_params"]
    assert (m.motion.block_expansion, m.motion.max_features, m.motion.num_blocks) == (
        dm["block_expansion"], dm["max_features"], dm["num_blocks"])
    assert m.motion.align_corners is False and m.warper.align_corners is False
    assert cfg.image_size == fx["meta"]["image_size"]


# --- keypoint detector ---------------------------------------------------------------------------------
def test_keypoints_match_official(fx, nets):
    model, _ = nets
    with torch.no_grad():
        for name, img in (("kp_source", fx["inputs"]["source"]), ("kp_driving", fx["inputs"]["driving"])):
            kp = model.detect(img)
            _close(kp["value"], fx["outputs"][name]["value"], KP_ATOL, f"{name}.value")
            _close(kp["jacobian"], fx["outputs"][name]["jacobian"], KP_ATOL, f"{name}.jacobian")


def test_keypoint_intermediates(fx, nets):
    model, _ = nets
    det = model.keypoint_detector
    ref = fx["outputs"]["intermediates"]["kp_detector_source"]
    with torch.no_grad():
        down = det.down(fx["inputs"]["source"])
        _close(down, ref["down"], 1e-6, "down")
        logits, feats = det.heatmap_logits(fx["inputs"]["source"])
        _close(feats, ref["predictor"], ATOL, "predictor")
        assert logits.shape == ref["kp_logits"].shape == (2, 10, 10, 10)  # 16x16 map cropped by the 7x7 pad-0 head
        _close(logits, ref["kp_logits"], ATOL, "kp_logits")
        _close(det.jacobian(feats), ref["jacobian_map"], ATOL, "jacobian_map")


def test_heatmap_to_keypoints_on_official_logits(fx):
    """The reusable soft-argmax, fed the official logits, gives the official keypoints (grid on the cropped map)."""
    for src, name in (("kp_detector_source", "kp_source"), ("kp_detector_driving", "kp_driving")):
        ref = fx["outputs"]["intermediates"][src]
        kp = heatmap_to_keypoints(spatial_softmax(ref["kp_logits"], 0.1), ref["jacobian_map"])
        _close(kp["value"], fx["outputs"][name]["value"], 1e-6, f"{name}.value")
        _close(kp["jacobian"], fx["outputs"][name]["jacobian"], 1e-6, f"{name}.jacobian")


def test_single_jacobian_map_and_no_jacobian():
    from thkit.motion.fomm import FOMMKeypointDetector

    img = torch.rand(2, 3, 64, 64)
    single = FOMMKeypointDetector(num_kp=5, block_expansion=4, max_features=16, num_blocks=3,
                                  single_jacobian_map=True).eval()
    assert single.jacobian.out_channels == 4
    out = single(img)
    assert out["jacobian"].shape == (2, 5, 2, 2)
    # identity init: every Jacobian is the identity
    torch.testing.assert_close(out["jacobian"], torch.eye(2).expand(2, 5, 2, 2), atol=1e-6, rtol=0)
    plain = FOMMKeypointDetector(num_kp=5, block_expansion=4, max_features=16, num_blocks=3,
                                 estimate_jacobian=False).eval()
    out = plain(img)
    assert set(out) == {"value"} and out["value"].abs().max() <= 1
    with pytest.raises(ValueError, match="expected 1 or 5"):
        heatmap_to_keypoints(torch.rand(1, 5, 4, 4), torch.rand(1, 8, 4, 4))


# --- dense motion and generator --------------------------------------------------------------------------
def test_dense_motion_with_official_keypoints(fx, nets):
    """Isolates the motion network: the official keypoints in, every dense-motion tensor out."""
    model, _ = nets
    o = fx["outputs"]
    with torch.no_grad():
        m = model.motion(fx["inputs"]["source"], o["kp_source"], o["kp_driving"])
    ref, inter = o["dense_motion_network"], o["intermediates"]["dense_motion_network"]
    _close(m["heatmap_representation"], inter["heatmap_representation"], 1e-6, "heatmap_representation")
    _close(m["sparse_motion"], inter["sparse_motion"], 1e-6, "sparse_motion")
    _close(m["sparse_deformed"], ref["sparse_deformed"], 1e-5, "sparse_deformed")
    _close(m["mask"], ref["mask"], 1e-5, "mask")
    _close(m["deformation"], ref["deformation"], 1e-5, "deformation")
    assert isinstance(m["occlusion_map"], list) and len(m["occlusion_map"]) == 1
    _close(m["occlusion_map"][0], ref["occlusion_map"], 1e-5, "occlusion_map")


def test_generator_end_to_end(fx, nets):
    """Our keypoints -> our motion -> warp -> decode, against the official generator outputs."""
    model, _ = nets
    o, inp = fx["outputs"], fx["inputs"]
    with torch.no_grad():
        out = model(inp["source"], inp["driving"])
    g = o["generator"]
    for key in ("mask", "sparse_deformed", "deformed", "prediction"):
        _close(out[key], g[key], ATOL, key)
    _close(out["occlusion_map"][0], g["occlusion_map"], ATOL, "occlusion_map")
    _close(out["deformation"], o["dense_motion_network"]["deformation"], ATOL, "deformation")
    inter = o["intermediates"]["generator"]
    assert len(out["warped_features"]) == 1  # only the coarsest encoder level is warped
    _close(out["warped_features"][0], inter["bottleneck.input"], ATOL, "bottleneck.input")
    with torch.no_grad():
        _close(model.encoder(inp["source"])[-1], inter["down_blocks.1"], ATOL, "encoder output")


# --- discriminator ----------------------------------------------------------------------------------------
def test_discriminator_spectral_norm_eval(fx, nets):
    """Eval: weight = weight_orig / (u . W v) with the stored u, v; no power iteration."""
    _, disc = nets
    sd = fx["state_dict"]["discriminator"]
    with torch.no_grad():
        disc(fx["inputs"]["driving"])
    for name, ref in fx["outputs"]["intermediates"]["discriminator_spectral_sigma"].items():
        conv = disc.get_submodule(name)
        _close(conv.weight, ref["effective_weight"], 1e-7, f"{name} effective weight")
        assert torch.equal(conv.weight_u, sd[name + ".weight_u"]), f"{name}: u changed in eval"
        assert torch.equal(conv.weight_v, sd[name + ".weight_v"]), f"{name}: v changed in eval"


def _check_disc(out, ref, what):
    assert set(out) == {"feature_maps", "prediction_map"} and list(out["feature_maps"]) == ["1"]
    maps = out["feature_maps"]["1"]
    assert len(maps) == len(ref["feature_maps_1"]) == 4
    for i, (a, b) in enumerate(zip(maps, ref["feature_maps_1"])):
        _close(a, b, ATOL, f"{what} feature_maps[{i}]")
    _close(out["prediction_map"]["1"], ref["prediction_map_1"], ATOL, f"{what} prediction_map")


def test_discriminator_outputs(fx, nets):
    _, disc = nets
    o = fx["outputs"]
    with torch.no_grad():
        _check_disc(disc(fx["inputs"]["driving"]), o["discriminator_on_driving"], "on driving")


def test_discriminator_on_prediction_within_float32_rounding(fx, nets):
    """The discriminator on the generator's prediction, in the default memory layout, on whatever CPU kernels the
    installed torch picks.

    On this smooth input some InstanceNorm channels of the last block have a spatial variance of ~2e-6, so the
    block amplifies a float32-rounding-sized difference of its input several-fold: the official float32 output
    of that block is itself 3.1e-4 from the exact (float64) result of the same network, so no float32 code can
    be held to 1e-4 of it there.  What is asserted instead, with kernel-independent float64 references:

    * every block alone, in float64, from the official float32 input of that block, gives the official output
      within ATOL (the computation is the official one, block by block);
    * the official output of the last block is further than ATOL from the exact result, and that block
      amplifies its input's difference (measured, float64): this is why an end-to-end 1e-4 fails;
    * our float32 end-to-end maps are within ATOL of the official ones *plus* the float64-measured propagation
      of the previous map's difference through this block, ``|B(ours[i-1]) - B(official[i-1])|``, where that
      previous difference is itself within ATOL.
    """
    _, disc = nets
    d64 = official_nets("fomm", fx["state_dict"])[1].double()  # the same (float32-valued) weights, in float64
    o = fx["outputs"]
    pred = o["generator"]["prediction"]
    ref = o["discriminator_on_prediction"]["feature_maps_1"]
    blocks64 = d64.discs["1"].down_blocks
    with torch.no_grad():
        ours = disc(pred)["feature_maps"]["1"]
        exact = d64(pred.double())["feature_maps"]["1"]
        official_in = [pred] + ref[:-1]
        ours_in = [pred] + ours[:-1]
        for i, block in enumerate(blocks64):
            _close(block(official_in[i].double()), ref[i], ATOL, f"block {i} alone in float64")
        # why 1e-4 end to end cannot hold: the official float32 result of the last block is far from exact,
        # and that block multiplies an input difference (official vs exact map 2) several-fold
        last = len(ref) - 1
        official_rounding = _err(ref[last], exact[last])
        assert official_rounding > ATOL, official_rounding
        d_in = _err(ref[last - 1], exact[last - 1])
        d_out = _err(blocks64[last](ref[last - 1].double()), exact[last])
        assert d_out > 2 * d_in, (d_out, d_in)
        for i in range(len(ref)):
            assert _err(ours_in[i], official_in[i]) <= ATOL, f"input of block {i}"
            amplified = _err(blocks64[i](ours_in[i].double()), blocks64[i](official_in[i].double()))
            _close(ours[i], ref[i], ATOL + amplified, f"on prediction feature_maps[{i}] (+{amplified:.2g} amplified)")
        # the head on the official last map
        _close(disc.discs["1"].conv(ref[-1]), o["discriminator_on_prediction"]["prediction_map_1"], ATOL, "head")


def test_discriminator_pyramid_and_kp():
    from thkit.models.discriminator import MultiScaleDiscriminator

    d = MultiScaleDiscriminator(scales=[1, 0.5], block_expansion=4, max_features=16, use_kp=True, num_kp=3).eval()
    assert not any("pyramid" in k for k in d.state_dict())  # the pyramid kernels are not weights
    assert set(d.discs) == {"1", "0-5"}
    kp = {"value": torch.rand(2, 3, 2) * 2 - 1}
    out = d(torch.rand(2, 3, 128, 128), kp=kp)
    assert list(out["prediction_map"]) == ["1", "0.5"]
    assert out["prediction_map"]["0.5"].shape[-1] < out["prediction_map"]["1"].shape[-1]
    with pytest.raises(ValueError, match="use_kp"):
        d(torch.rand(2, 3, 64, 64))


# --- relative motion transfer -----------------------------------------------------------------------------
def test_animation_relative(fx, nets):
    """demo.make_animation(relative=True, adapt_movement_scale=True), with the official batch-0 scale."""
    model, _ = nets
    a, inp, o = fx["outputs"]["animation_relative"], fx["inputs"], fx["outputs"]
    video = inp["driving_video"]
    with torch.no_grad():
        cache = model.encode_source(inp["source"])
        kp_s = cache["kp_source"]
        kp_init = model.detect(video[:, :, 0])
        _close(kp_init["value"], a["kp_driving_initial"]["value"], KP_ATOL, "kp_driving_initial")
        assert hull_area(kp_s["value"][0]) == pytest.approx(a["source_area_batch0"], abs=1e-5)
        assert hull_area(kp_init["value"][0]) == pytest.approx(a["driving_initial_area_batch0"], abs=1e-5)
        scale = movement_scale(kp_s, kp_init, official_batch0=True)
        assert isinstance(scale, float) and scale == pytest.approx(a["adapt_movement_scale"], abs=1e-6)
        # from the official keypoints, the official scale exactly
        assert (movement_scale(o["kp_source"], a["kp_driving_initial"], official_batch0=True)
                == a["adapt_movement_scale"])
        for t, ref in enumerate(a["frames"]):
            kp_d = model.detect(video[:, :, t])
            _close(kp_d["value"], ref["kp_driving"]["value"], KP_ATOL, f"frame {t} kp_driving")
            kp_norm = transfer_motion(kp_s, kp_d, kp_init, relative=True, relative_jacobian=True,
                                      adapt_movement_scale=True, official_batch0=True)
            _close(kp_norm["value"], ref["kp_norm"]["value"], KP_ATOL, f"frame {t} kp_norm.value")
            _close(kp_norm["jacobian"], ref["kp_norm"]["jacobian"], KP_ATOL, f"frame {t} kp_norm.jacobian")
            # the transfer alone, on the official keypoints, is bit-exact (float64 scalar on float32)
            exact = transfer_motion(o["kp_source"], ref["kp_driving"], a["kp_driving_initial"],
                                    adapt_movement_scale=True, official_batch0=True)
            assert torch.equal(exact["value"], ref["kp_norm"]["value"])
            assert torch.equal(exact["jacobian"], ref["kp_norm"]["jacobian"])
            out = model.animate(cache, kp_norm)
            _close(out["prediction"], ref["prediction"], ATOL, f"frame {t} prediction")
            _close(out["occlusion_map"][0], ref["occlusion_map"], ATOL, f"frame {t} occlusion_map")
            _close(out["mask"], ref["mask"], ATOL, f"frame {t} mask")
            _close(out["deformation"], ref["deformation"], ATOL, f"frame {t} deformation")


def test_transfer_per_sample_scale(fx):
    a, o = fx["outputs"]["animation_relative"], fx["outputs"]
    kp_s, kp_i, kp_d = o["kp_source"], a["kp_driving_initial"], a["frames"][2]["kp_driving"]
    per = movement_scale(kp_s, kp_i)
    assert per.shape == (2,) and per.dtype == torch.float32
    assert per[0].item() == pytest.approx(a["adapt_movement_scale"], rel=1e-6)
    assert abs(per[1].item() - a["adapt_movement_scale"]) > 1e-3  # element 1 really has its own scale
    batched = transfer_motion(kp_s, kp_d, kp_i, adapt_movement_scale=True)
    for i in range(2):  # per sample == the official function run on that sample alone
        one = lambda kp: {k: v[i:i + 1] for k, v in kp.items()}  # noqa: E731
        alone = transfer_motion(one(kp_s), one(kp_d), one(kp_i), adapt_movement_scale=True, official_batch0=True)
        assert torch.equal(batched["value"][i:i + 1], alone["value"])
        assert torch.equal(batched["jacobian"][i:i + 1], alone["jacobian"])
    # a batch-1 source against a batch-2 driving video
    src1 = {k: v[:1] for k, v in kp_s.items()}
    assert movement_scale(src1, kp_i).shape == (2,)


def test_transfer_options_and_errors(fx):
    o = fx["outputs"]
    kp_s, kp_d = o["kp_source"], o["kp_driving"]
    kp_i = o["animation_relative"]["kp_driving_initial"]
    absolute = transfer_motion(kp_s, kp_d, kp_i, relative=False)
    assert absolute["value"] is kp_d["value"] and absolute["jacobian"] is kp_d["jacobian"]
    plain = transfer_motion(kp_s, kp_d, kp_i, adapt_movement_scale=False, relative_jacobian=False)
    assert torch.equal(plain["value"], kp_d["value"] - kp_i["value"] + kp_s["value"])
    assert plain["jacobian"] is kp_d["jacobian"]
    with pytest.raises(ValueError, match="kp_driving_initial"):
        transfer_motion(kp_s, kp_d, None)
    with pytest.raises(ValueError, match="Jacobians"):
        transfer_motion({"value": kp_s["value"]}, kp_d, kp_i)
    line = {"value": torch.stack([torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 5)], -1)[None]}
    with pytest.raises(ValueError, match="convex hull"):
        movement_scale(line, line)


# --- recipes, parameter counts, converter -------------------------------------------------------------------
@pytest.fixture(scope="module")
def vox256():
    cfg = load_recipe("fomm/vox256")
    with torch.device("meta"):  # shapes and counts only: no 60 M-parameter init on CPU
        model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))
        disc = build("discriminator", cfg.discriminator.to_dict(), path="discriminator")
    return cfg, model, disc


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_vox256_parameter_counts_equal_official(vox256):
    cfg, model, disc = vox256
    keys = json.loads((FIXTURES / "vox256_keys.json").read_text())
    assert _count(model.keypoint_detector) == 14_215_368 == keys["networks"]["kp_detector"]["num_parameters"]
    assert _count(model.motion) == 37_730_268 == keys["sub_networks"]["generator.dense_motion_network"]
    assert _count(model.encoder) + _count(model.decoder) == 7_845_123
    assert (_count(model.encoder) + _count(model.decoder) + _count(model.motion)
            == keys["networks"]["generator"]["num_parameters"])
    assert _count(disc) == 2_758_849 == keys["networks"]["discriminator"]["num_parameters"]
    assert _count(model) == 14_215_368 + 37_730_268 + 7_845_123
    assert cfg.model.motion.align_corners is True and cfg.model.warper.align_corners is True


def test_vox256_official_keys_convert_completely(vox256):
    _, model, disc = vox256
    official = official_zero_state_dicts("fomm")
    official.update(optimizer_generator={}, optimizer_kp_detector={}, optimizer_discriminator={}, epoch=99)
    sds = get_converter("fomm")(official)
    assert set(sds) == {"model", "discriminator"}
    n_official = sum(len(official[n]) for n in ("generator", "kp_detector", "discriminator"))
    assert len(sds["model"]) + len(sds["discriminator"]) == n_official == 75 + 196 + 26
    load_strict_on_meta(sds, model=model, discriminator=disc)
    # the demo-style checkpoint (no discriminator) converts too
    sds = get_converter("fomm")({k: official[k] for k in ("generator", "kp_detector")})
    assert set(sds) == {"model"}


_official = official_copy


def test_converter_unknown_key(fx):
    off = _official(fx)
    off["generator"]["dense_motion_network.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unknown keys.*dense_motion_network\.extra\.weight"):
        get_converter("fomm")(off)
    off = _official(fx)
    off["kp_detector"]["kp.weight_orig"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unknown keys.*kp\.weight_orig"):
        get_converter("fomm")(off)
    off = _official(fx)
    off["ema"] = {}
    with pytest.raises(CheckpointError, match="unknown entries.*ema"):
        get_converter("fomm")(off)


def test_converter_missing_key(fx):
    off = _official(fx)
    del off["generator"]["final.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys.*generator\.final\.bias"):
        get_converter("fomm")(off)
    off = _official(fx)
    del off["generator"]["bottleneck.r2.norm1.running_var"]
    with pytest.raises(CheckpointError, match=r"missing keys.*bottleneck\.r2\.norm1\.running_var"):
        get_converter("fomm")(off)
    off = _official(fx)  # a whole block gone: the gap in the family is named
    off["kp_detector"] = {k: v for k, v in off["kp_detector"].items()
                          if not k.startswith("predictor.encoder.down_blocks.1.")}
    with pytest.raises(CheckpointError, match=r"missing keys.*predictor\.encoder\.down_blocks\.1"):
        get_converter("fomm")(off)
    off = _official(fx)
    off["discriminator"] = {k: v for k, v in off["discriminator"].items() if ".down_blocks.2.norm." not in k}
    with pytest.raises(CheckpointError, match=r"missing keys.*discs\.1\.down_blocks\.2\.norm"):
        get_converter("fomm")(off)
    off = _official(fx)
    del off["kp_detector"]
    with pytest.raises(CheckpointError, match="missing networks.*kp_detector"):
        get_converter("fomm")(off)


def test_small_recipe_trains_on_cpu():
    cfg = load_recipe("fomm/small")
    assert cfg.image_size in (64, 128)
    torch.manual_seed(0)
    model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size")).train()
    disc = build("discriminator", cfg.discriminator.to_dict(), path="discriminator").train()
    src, drv = torch.rand(1, 3, cfg.image_size, cfg.image_size), torch.rand(1, 3, cfg.image_size, cfg.image_size)
    out = model(src, drv)
    assert out["prediction"].shape == src.shape
    loss = (out["prediction"] - drv).abs().mean() + disc(out["prediction"])["prediction_map"]["1"].pow(2).mean()
    loss.backward()
    for part in ("keypoint_detector", "motion", "encoder", "decoder"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{part} gets no gradient"


def test_no_occlusion_gives_empty_list():
    from thkit.motion.fomm import FirstOrderMotion

    m = FirstOrderMotion(num_kp=4, block_expansion=4, max_features=16, num_blocks=2,
                         estimate_occlusion_map=False).eval()
    kp = {"value": torch.rand(1, 4, 2) - 0.5}
    out = m(torch.rand(1, 3, 32, 32), kp, kp)
    assert out["occlusion_map"] == [] and out["deformation"].shape == (1, 8, 8, 2)
    # identical keypoints without Jacobians: every sparse motion is the identity grid
    torch.testing.assert_close(out["sparse_motion"], out["sparse_motion"][:, :1].expand_as(out["sparse_motion"]))

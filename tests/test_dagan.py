"""DaGAN parts against the official code's outputs (shared/fixtures/official/dagan/tiny.pt, README §12).

The fixture's official state dicts (generator, RGB-D keypoint detector, discriminator, ResNet-18 depth encoder and
decoder) go through the ``dagan`` converter into ``recipes/dagan/tiny_fixture.py``, evaluated in eval mode.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES as OFFICIAL
from conftest import load_strict_on_meta, official_nets, official_zero_state_dicts

from thkit.builder import build, build_model
from thkit.convert import detect_scores, get_converter
from thkit.convert.dagan import convert_depth, depth_variant
from thkit.encode.depth import MonodepthDepthNet
from thkit.errors import CheckpointError, RecipeError
from thkit.recipe import load_recipe
from thkit.transfer import movement_scale, transfer_motion

FIXTURES = OFFICIAL / "dagan"
ATOL = 1e-4  # features, images, flows
KP_ATOL = 2e-5  # keypoints: float32 rounding of the official computation alone moves them by up to 8e-6 (README §12)

pytestmark = pytest.mark.usefixtures("one_thread")


def _err(a, b) -> float:
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), tuple(b.shape))
    return (a.double() - b.double()).abs().max().item()


def _close(a, ref, atol, what):
    """``a`` against a stored tensor or a compacted entry (README §1.1: strided sub-tensor and float64 sums)."""
    if isinstance(ref, dict) and ref.get("__compact__"):
        assert list(a.shape) == list(ref["shape"]), (what, tuple(a.shape), ref["shape"])
        d0, d1 = ref["spatial_dims"]
        s = ref["stride"]
        idx = [slice(None)] * a.dim()
        idx[d0], idx[d1] = slice(None, None, s), slice(None, None, s)
        e = _err(a[tuple(idx)], ref["sub"])
        n = a.numel()
        assert abs(a.double().sum().item() - ref["sum"]) <= atol * n, f"{what}: sum differs"
        assert abs(a.double().abs().sum().item() - ref["abs_sum"]) <= atol * n, f"{what}: abs_sum differs"
    else:
        e = _err(a, ref)
    assert e <= atol, f"{what}: max abs error {e:.3g} > {atol:g}"


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURES / "tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def nets(fx):
    return official_nets("dagan", fx["state_dict"])


@pytest.fixture(scope="module")
def e2e(fx, nets):
    model, _ = nets
    model.compensator.return_attention = True
    try:
        with torch.no_grad():
            return model(fx["inputs"]["source"], fx["inputs"]["driving"])
    finally:
        model.compensator.return_attention = False


# --- recipe <-> official configuration ------------------------------------------------------------------------
def test_recipe_from_official_equals_tiny_fixture(fx):
    conv = get_converter("dagan")
    recipe = conv.recipe_from_official(fx["config"], fx["meta"]["fixture_patches"], image_size=64,
                                       align_corners=False)
    cfg = load_recipe("dagan/tiny_fixture")
    assert recipe["image_size"] == cfg.image_size == fx["meta"]["image_size"]
    a = build_model(recipe["model"], image_size=64).state_dict()
    b = build_model(cfg.model.to_dict(), image_size=64).state_dict()
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}
    kd = recipe["model"]["keypoint_detector"]
    assert kd["num_kp"] == 15 and kd["in_channels"] == 4 and kd["depth"]["num_layers"] == 18
    # the SPADE generator hard-codes its decoder widths: the fixture's tiny widths cannot be its input
    with pytest.raises(CheckpointError, match="SPADE generator's decoder hard-codes a 256-channel input"):
        conv.recipe_from_official({**fx["config"], "cli_args": {**fx["config"]["cli_args"],
                                                                 "generator": "SPADEDepthAwareGenerator"}})
    with pytest.raises(CheckpointError, match="cli_args.generator: 'OtherGenerator'"):
        conv.recipe_from_official({**fx["config"], "cli_args": {**fx["config"]["cli_args"],
                                                                 "generator": "OtherGenerator"}})
    with pytest.raises(CheckpointError, match="unknown key.*patches.EXTRA"):
        conv.recipe_from_official(fx["config"], {**fx["meta"]["fixture_patches"], "EXTRA": 1})


# --- depth network --------------------------------------------------------------------------------------------
def test_depth_maps_match_official(fx, nets):
    model, _ = nets
    depth = model.keypoint_detector.depth
    assert not depth.training and not any(p.requires_grad for p in depth.parameters())
    with torch.no_grad():
        for name in ("source", "driving"):
            img, ref = fx["inputs"][name], fx["outputs"][f"depth_{name}"]
            feats = depth.encode(img)
            for i, f in enumerate(feats):
                _close(f, ref["encoder_features"][i], 1e-5, f"depth_{name} encoder feature {i}")
            disps = depth(img)
            for s, d in enumerate(disps):
                _close(d, ref[f"disp_{s}"], 1e-5, f"depth_{name} disp_{s}")


# --- keypoints ------------------------------------------------------------------------------------------------
def test_rgbd_keypoints_match_official(fx, nets):
    model, _ = nets
    det = model.keypoint_detector
    with torch.no_grad():
        for name in ("source", "driving"):
            kp = model.detect(fx["inputs"][name])
            ref = fx["outputs"][f"kp_{name}"]
            _close(kp["value"], ref["value"], KP_ATOL, f"kp_{name}.value")
            _close(kp["jacobian"], ref["jacobian"], KP_ATOL, f"kp_{name}.jacobian")
            _close(kp["depth"], fx["outputs"][f"depth_{name}"]["disp_0"], 1e-5, f"kp_{name}.depth")
        rgbd = torch.cat([fx["inputs"]["source"], fx["outputs"]["depth_source"]["disp_0"]], dim=1)
        logits, _ = det.heatmap_logits(rgbd)
        _close(logits, fx["outputs"]["intermediates"]["kp_detector_source"]["kp_logits"], ATOL, "kp_logits")
    with pytest.raises(ValueError, match="expects 3-channel images"):
        det(torch.rand(1, 4, 64, 64))


# --- dense motion ---------------------------------------------------------------------------------------------
def test_dense_motion_with_official_keypoints(fx, nets):
    model, _ = nets
    o = fx["outputs"]
    with torch.no_grad():
        m = model.motion(fx["inputs"]["source"], o["kp_source"], o["kp_driving"])
    ref = o["dense_motion_network"]
    _close(m["deformation"], ref["deformation"], ATOL, "deformation")
    _close(m["occlusion_map"][0], ref["occlusion_map"], ATOL, "occlusion_map")
    _close(m["mask"], ref["mask"], ATOL, "mask")
    _close(m["sparse_deformed"], ref["sparse_deformed"], ATOL, "sparse_deformed")


# --- depth-aware attention ------------------------------------------------------------------------------------
def test_depth_aware_attention_on_official_inputs(fx, nets):
    model, _ = nets
    att = model.compensator
    ig = fx["outputs"]["intermediates"]["generator"]
    with torch.no_grad():
        depth_feature = att.depth_encoder(fx["outputs"]["depth_source"]["disp_0"])[-1]
        _close(depth_feature, ig["depth_feature"], 1e-5, "depth_feature")
        _close(att.query_conv(ig["depth_feature"]), ig["query_conv"], 1e-5, "query_conv")
        _close(att.key_conv(ig["attention_input_feat"]), ig["key_conv"], 1e-4, "key_conv")
        _close(att.value_conv(ig["attention_input_feat"]), ig["value_conv"], 1e-5, "value_conv")
        out = att.attend(ig["depth_feature"], ig["attention_input_feat"])
        _close(out, ig["attention_output"], 1e-5, "attention_output")
        amap = att.attention_map(ig["depth_feature"], ig["attention_input_feat"])
        _close(amap, fx["outputs"]["generator"]["attention"], 1e-5, "attention matrix")
        assert torch.allclose(amap.sum(-1), torch.ones(2, 256), atol=1e-5)
        # the backends agree (the math reference and torch SDPA)
        for backend in ("math", "sdpa"):
            att.backend = backend
            _close(att.attend(ig["depth_feature"], ig["attention_input_feat"]), ig["attention_output"], 1e-5,
                   f"attention_output via {backend}")
        att.backend = None
        # gamma scales what the attention adds: with gamma 0 the feature passes unchanged (the official init)
        g = att.gamma.detach().clone()
        att.gamma.zero_()
        assert torch.equal(att.attend(ig["depth_feature"], ig["attention_input_feat"]), ig["attention_input_feat"])
        att.gamma.copy_(g)


def test_attention_needs_a_depth():
    from thkit.compensate.dagan import DepthAwareAttention

    att = DepthAwareAttention(channels=16, block_expansion=4, max_features=16)
    with pytest.raises(ValueError, match="needs the source depth: kp_source has no 'depth'"):
        att([torch.rand(1, 16, 8, 8)], {"kp_source": {"value": torch.zeros(1, 5, 2)},
                                        "source": torch.rand(1, 3, 32, 32)})
    with pytest.raises(ValueError, match="ends with 16 channels; the attention needs channels=32"):
        DepthAwareAttention(channels=32, block_expansion=4, max_features=16)


# --- generator end to end -------------------------------------------------------------------------------------
def test_generator_end_to_end(fx, e2e):
    ref = fx["outputs"]["generator"]
    _close(e2e["prediction"], ref["prediction"], ATOL, "prediction")
    _close(e2e["deformed"], ref["deformed"], ATOL, "deformed")
    _close(e2e["occlusion_map"][0], ref["occlusion_map"], ATOL, "occlusion_map")
    _close(e2e["mask"], ref["mask"], ATOL, "mask")
    _close(e2e["attention"], ref["attention"], 1e-5, "attention")
    ig = fx["outputs"]["intermediates"]["generator"]
    _close(e2e["warped_features"][-1], ig["attention_input_feat"], ATOL, "attention_input_feat")
    _close(e2e["compensated_features"][-1], ig["attention_output"], ATOL, "attention_output")


def test_discriminator_within_float32_rounding(fx, nets):
    """The official discriminator features move by up to 7e-5 under float32 rounding alone (README §12), so each
    map is compared with twice the official float32-vs-float64 gap (+1e-5)."""
    _, disc = nets
    o = fx["outputs"]
    gap = fx["meta"]["diagnostics"]["float64_reference_max_abs_diff"]
    with torch.no_grad():
        for name, img in (("discriminator_on_prediction", o["generator"]["prediction"]),
                          ("discriminator_on_driving", fx["inputs"]["driving"])):
            out = disc(img, kp={k: v for k, v in o["kp_driving"].items()})
            for i, f in enumerate(out["feature_maps"]["1"]):
                _close(f, o[name]["feature_maps_1"][i], 2 * gap[f"{name}.feature_maps_1[{i}]"] + 1e-5,
                       f"{name} feature map {i}")
            _close(out["prediction_map"]["1"], o[name]["prediction_map_1"],
                   2 * gap[f"{name}.prediction_map_1"] + 1e-5, f"{name} prediction map")


def test_animation_relative(fx, nets):
    """demo.make_animation(relative=True, adapt_movement_scale=True): keypoints on RGB-D, the batch-0 scale."""
    model, _ = nets
    a, inp = fx["outputs"]["animation_relative"], fx["inputs"]
    video = inp["driving_video"]
    with torch.no_grad():
        cache = model.encode_source(inp["source"])
        kp_s = cache["kp_source"]
        kp_init = model.detect(video[:, :, 0])
        _close(kp_init["depth"], a["depth_driving_initial"], 1e-5, "depth_driving_initial")
        _close(kp_init["value"], a["kp_driving_initial"]["value"], KP_ATOL, "kp_driving_initial")
        assert movement_scale(kp_s, kp_init, official_batch0=True) == pytest.approx(a["adapt_movement_scale"],
                                                                                     abs=1e-5)
        for t, ref in enumerate(a["frames"]):
            kp_d = model.detect(video[:, :, t])
            _close(kp_d["depth"], ref["depth_map"], 1e-5, f"frame {t} depth")
            kp_norm = transfer_motion(kp_s, kp_d, kp_init, relative=True, relative_jacobian=True,
                                      adapt_movement_scale=True, official_batch0=True)
            _close(kp_norm["value"], ref["kp_norm"]["value"], KP_ATOL, f"frame {t} kp_norm")
            out = model.animate(cache, kp_norm)
            _close(out["prediction"], ref["prediction"], ATOL, f"frame {t} prediction")
            _close(out["deformation"], ref["deformation"], ATOL, f"frame {t} deformation")
            _close(out["occlusion_map"][0], ref["occlusion_map"], ATOL, f"frame {t} occlusion_map")


# --- vox-256: parameter counts and official keys --------------------------------------------------------------
def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def vox256():
    cfg = load_recipe("dagan/vox256")
    with torch.device("meta"):
        model = build_model(cfg.model.to_dict(), image_size=cfg.image_size)
        disc = build("discriminator", cfg.discriminator.to_dict(), path="discriminator")
    return cfg, model, disc


def test_vox256_parameter_counts_equal_official(vox256):
    cfg, model, disc = vox256
    keys = json.loads((FIXTURES / "vox256_keys.json").read_text())
    nets = keys["networks"]
    kp = model.keypoint_detector
    depth = kp.depth
    assert _count(depth.encoder) == 11_689_512 == nets["depth_encoder"]["num_parameters"]
    assert _count(depth.decoder) == 3_152_724 == nets["depth_decoder"]["num_parameters"]
    assert _count(kp) - _count(depth) == 14_262_519 == nets["kp_detector"]["num_parameters"]
    assert _count(model.motion) == 37_796_433 == keys["sub_networks"]["generator.dense_motion_network"]
    gen = _count(model.motion) + _count(model.encoder) + _count(model.compensator) + _count(model.decoder)
    assert gen == 46_096_917 == nets["generator"]["num_parameters"]
    assert _count(model.compensator) == 82_241 + 373_120
    assert _count(disc) == 2_774_209 == nets["discriminator"]["num_parameters"]
    assert cfg.model.motion.align_corners is False and cfg.num_kp == 15


def test_vox256_official_keys_convert_completely(vox256):
    _, model, disc = vox256
    official = official_zero_state_dicts("dagan")
    official.update(optimizer_generator={}, optimizer_kp_detector={}, optimizer_discriminator={}, epoch=149)
    official["generator"] = {f"module.{k}": v for k, v in official["generator"].items()}  # DDP prefixes
    assert get_converter("dagan").detect(official)[0] == 1.0
    sds = get_converter("dagan")(official)
    n = sum(len(official[k]) for k in ("generator", "kp_detector", "discriminator", "depth_encoder", "depth_decoder"))
    assert len(sds["model"]) + len(sds["discriminator"]) == n == 224 + 75 + 16 + 122 + 28
    load_strict_on_meta(sds, model=model, discriminator=disc)


def test_detection_names_the_method(fx):
    sd = {k: v for k, v in fx["state_dict"].items()}
    scores = {m: s for m, s, _ in detect_scores(sd)}
    assert scores["dagan"] == 1.0 and scores.get("fomm", 0) < 0.999
    # a FOMM checkpoint is not DaGAN's
    fomm = torch.load(OFFICIAL / "fomm" / "tiny.pt", weights_only=True)["state_dict"]
    score, why = get_converter("dagan").detect(fomm)
    assert score == 0 and "AttnModule" in why
    # the checkpoint alone: the depth files are named
    with pytest.raises(CheckpointError, match="no depth_encoder and depth_decoder.*encoder.pth and depth.pth"):
        get_converter("dagan")({k: sd[k] for k in ("generator", "kp_detector")})
    bad = dict(sd, generator=dict(sd["generator"], **{"AttnModule.extra.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unknown keys.*AttnModule\.extra\.weight"):
        get_converter("dagan")(bad)


# --- depth files: ResNet-18 vs ResNet-50, and where the weights come from ----------------------------------------
def _official_depth_files(net: MonodepthDepthNet, folder):
    sd = net.state_dict()
    enc = {k: v for k, v in sd.items() if k.startswith("encoder.")}
    enc.update(height=256, width=256, use_stereo=False)  # Monodepth2 saves these too
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(enc, folder / "encoder.pth")
    torch.save({k: v for k, v in sd.items() if k.startswith("decoder.")}, folder / "depth.pth")
    return folder


def test_full_size_depth_variants_detected():
    keys = json.loads((FIXTURES / "vox256_keys.json").read_text())
    r18 = official_zero_state_dicts("dagan")
    zeros = lambda info: {k: torch.zeros(s) for k, s in info["keys"].items()}  # noqa: E731
    r50 = {"depth_encoder": zeros(keys["variant_networks"]["depth_encoder_resnet50"]),
           "depth_decoder": zeros(keys["variant_networks"]["depth_decoder_resnet50"])}
    assert depth_variant(r18["depth_encoder"], r18["depth_decoder"])[0] == 18
    assert depth_variant(r50["depth_encoder"], r50["depth_decoder"])[0] == 50
    assert depth_variant(decoder=r50["depth_decoder"])[0] == 50
    with pytest.raises(CheckpointError) as e:
        convert_depth(r50, expect_layers=18)
    msg = str(e.value)
    assert "\n" not in msg and "ResNet-50" in msg and "num_layers=50" in msg and "depth_face_model_Voxceleb2_10w" in msg
    with pytest.raises(CheckpointError, match="do not belong together"):
        depth_variant(r18["depth_encoder"], r50["depth_decoder"])
    with pytest.raises(CheckpointError, match="asks for num_layers=50"):
        get_converter("dagan").combine([{"generator": {}, "kp_detector": {}}, r18["depth_encoder"],
                                        r18["depth_decoder"]], depth_layers=50)


def test_depth_weights_file_setting(tmp_path):
    widths = dict(stage_widths=(4, 8, 16, 32), decoder_channels=(2, 4, 8, 16, 32))
    torch.manual_seed(0)
    r50 = MonodepthDepthNet(num_layers=50, **widths)
    folder = _official_depth_files(r50, tmp_path / "r50")
    cfg = dict(type="MonodepthDepthNet", num_layers=50, weights=str(folder), **widths)
    loaded = build("encoder", cfg, path="model.keypoint_detector.depth")
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(img), r50.eval()(img), strict=True))
    # the recipe asks for ResNet-18 but the files are ResNet-50: one line naming the variant and the setting
    with pytest.raises(RecipeError) as e:
        build("encoder", dict(cfg, num_layers=18), path="model.keypoint_detector.depth")
    msg = str(e.value)
    assert "model.keypoint_detector.depth" in msg and "ResNet-50" in msg and "num_layers=50" in msg
    assert "\n" not in msg
    with pytest.raises(RecipeError, match=r"no such file or folder.*weights="):
        build("encoder", dict(cfg, weights=str(tmp_path / "nowhere")), path="model.keypoint_detector.depth")
    with pytest.raises(RecipeError, match="multiple of 32 of at least 64"):
        build("encoder", dict(type="MonodepthDepthNet", image_size=48), path="model.keypoint_detector.depth")
    (tmp_path / "half").mkdir()
    with pytest.raises(RecipeError, match="has no depth.pth"):
        torch.save({}, tmp_path / "half" / "encoder.pth")
        build("encoder", dict(cfg, weights=str(tmp_path / "half")), path="model.keypoint_detector.depth")
    # the converter's combine reads the same folder beside the checkpoint
    combined = get_converter("dagan").combine([{"generator": {}, "kp_detector": {}}, str(folder)])
    assert set(combined) >= {"depth_encoder", "depth_decoder"}


# --- small recipe trains; the mix recipe ----------------------------------------------------------------------
def test_small_recipe_trains_a_few_steps(tmp_path):
    from thkit.datasets.synthetic import write_synthetic_dataset
    from thkit.engine.runner import build_runner

    synth = dict(videos=4, frames=6, seed=0)
    root = str(tmp_path / "synth")
    write_synthetic_dataset(root, size=64, progress=False, **synth)
    opts = {"image_size": 64, "losses.perceptual.scales": [1, 0.5], "train_dataloader.batch_size": 2,
            "train_dataloader.num_workers": 0, "train_dataloader.dataset.root": root,
            "train_dataloader.dataset.synth": synth, "val_dataloader.dataset.root": root,
            "val_dataloader.dataset.synth": synth, "val_dataloader.dataset.max_frames": 2,
            "train_cfg.max_iters": 2, "train_cfg.val_interval": 100, "default_hooks.logger.interval": 1,
            "default_hooks.checkpoint.interval": 100}
    runner = build_runner("dagan/small", work_dir=str(tmp_path / "work"), cfg_options=opts)
    from thkit.engine.trainer import unwrap

    model = unwrap(runner.model).generator if hasattr(unwrap(runner.model), "generator") else unwrap(runner.model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runner.train()
    after = model.state_dict()
    changed = {k.split(".")[0] for k, v in after.items() if v.dtype.is_floating_point and not torch.equal(v, before[k])}
    assert {"keypoint_detector", "motion", "encoder", "compensator", "decoder"} <= changed
    depth = {k: v for k, v in after.items() if k.startswith("keypoint_detector.depth.")}
    assert depth and all(torch.equal(v, before[k]) for k, v in depth.items()), "the frozen depth network changed"


def _mix_cfg():
    tiny = (4, 8, 16, 32)
    return load_recipe("mix/tpsmm_depth_attention", cfg_options={
        "image_size": 64, "model.keypoint_detector.stage_widths": tiny, "model.motion.block_expansion": 4,
        "model.motion.max_features": 32, "model.motion.num_blocks": 4,
        "model.motion.background_predictor.stage_widths": tiny, "model.encoder.block_expansion": 4,
        "model.encoder.max_features": 32, "model.decoder.block_expansion": 4, "model.decoder.max_features": 32,
        "model.compensator.channels": 32, "model.compensator.block_expansion": 4,
        "model.compensator.max_features": 32, "model.compensator.depth.stage_widths": tiny,
        "model.compensator.depth.decoder_channels": (2, 4, 8, 16, 32)})


def test_mix_tpsmm_with_depth_aware_attention_trains_one_step():
    cfg = _mix_cfg()
    assert cfg.model.compensator.type == "DepthAwareAttention" and cfg.model.motion.type == "ThinPlateSplineMotion"
    torch.manual_seed(0)
    model = build_model(cfg.model.to_dict(), image_size=cfg.image_size).train()
    with torch.no_grad():
        model.compensator.gamma.fill_(0.5)  # zero-init gamma would give the query/key convs no gradient
    src, drv = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    out = model(src, drv)
    assert out["prediction"].shape == src.shape and out["source_depth"].shape == (2, 1, 64, 64)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = (out["prediction"] - drv).abs().mean()
    loss.backward()
    att = model.compensator
    for name in ("query_conv", "key_conv", "value_conv"):
        assert getattr(att, name).weight.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert att.depth_encoder.first.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in att.depth.parameters()) and not att.depth.training
    w = att.query_conv.weight.detach().clone()
    opt.step()
    assert not torch.equal(w, att.query_conv.weight)

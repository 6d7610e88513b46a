"""MRFA parts against the official code's outputs (shared/fixtures/official/mrfa/tiny.pt), after conversion; the
vox1 recipe's parameter counts; the converter (detection, VGG skipped and reported, bad input); recipe_from_official."""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from conftest import FIXTURES, official_zero_state_dicts

from thkit.builder import build_model
from thkit.checkpoint import load_state_dict_strict
from thkit.convert import detect_scores, get_converter
from thkit.errors import CheckpointError
from thkit.recipe import load_recipe
from thkit.transfer import transfer_motion

KP_ATOL = 2e-5  # keypoints: float32 rounding of the official code alone moves them by up to 5e-6 (README sec. 11)
ATOL = 1e-4  # prior flow, every level's flow (pixels), occlusions, prediction (largest measured: 8.1e-6, level-64 flow)


def maxdiff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def assert_close(ours, ref, atol=ATOL, what=""):
    assert tuple(ours.shape) == tuple(ref.shape), f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    err = maxdiff(ours, ref)
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"


def convert(state_dicts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_converter("mrfa")(state_dicts)


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURES / "mrfa" / "tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(fx):
    cfg = load_recipe("mrfa/tiny_fixture")
    assert cfg.image_size == fx["meta"]["image_size"]
    m = build_model(cfg.model.to_dict(), image_size=cfg.image_size)
    load_state_dict_strict(m, convert(fx["state_dict"])["model"], "model")
    return m.eval()


@pytest.fixture(scope="module")
def recon(fx, model):
    """One reconstruction call (the fixture's MRFA.forward(is_train=False))."""
    with torch.no_grad():
        return model(fx["inputs"]["source"], fx["inputs"]["driving"])


# -- parts ------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_tokenpose_keypoints_and_tokens(fx, model):
    kd, inter = model.keypoint_detector, fx["outputs"]["intermediates"]
    for name in ("source", "driving"):
        img = fx["inputs"][name]
        feat = kd.pre_feature(img)
        assert_close(feat, inter[f"encoder_{name}"]["pre_feature"], ATOL, f"{name} HRNet feature")
        assert_close(kd.transformer.tokens(feat), inter[f"encoder_{name}"]["transformer_in"], ATOL, "tokens in")
        kp = kd(img)
        ref = fx["outputs"][f"kp_{name}"]
        assert_close(kp["value"], ref["kp"], KP_ATOL, f"kp_{name}")
        assert_close(kp["jacobian"], ref["jacobian"], KP_ATOL, f"jacobian_{name}")


def test_prior_motion(fx, recon):
    dm = fx["outputs"]["dense_motion"]
    assert_close(recon["deformation"], dm["deformation"], ATOL, "prior flow")
    assert_close(recon["occlusion_logits"], dm["occlusion"], ATOL, "prior occlusion logits")
    assert_close(recon["mask"], dm["mask"], ATOL, "mask")


@torch.no_grad()
def test_structure_correlation(fx, model):
    o = fx["outputs"]
    st = model.compensator.structure
    got = st(fx["inputs"]["source"], o["kp_source"]["kp"], o["kp_driving"]["kp"])
    ref = o["decoder_internals"]
    assert_close(got["query"], ref["q_d"], ATOL, "q_d")
    assert_close(got["key"], ref["k_s"], ATOL, "k_s")
    assert_close(got["volume"], ref["corr_volume"], ATOL, "correlation volume")


def test_every_level_flow_and_occlusion(fx, recon):
    ref = fx["outputs"]["decoder_internals"]
    assert_close(recon["init_flow"], ref["init_flow"], ATOL, "init_flow (pixels)")
    its = ref["iterations"]
    assert len(recon["flow_list"]) == len(its) == 6
    for i, it in enumerate(its):
        assert recon["flow_list"][i].shape[-1] == it["size"]
        assert_close(recon["flow_list"][i], it["flow"], ATOL, f"level {i} input flow")
        assert_close(recon["residual_flows"][i], it["d_flow"][:, :2], ATOL, f"level {i} residual flow")
        assert_close(recon["refined_flows"][i], it["flow_refined"], ATOL, f"level {i} refined flow")
        assert_close(recon["occlusion_list"][i], it["occlusion"], ATOL, f"level {i} occlusion")
        assert_close(recon["prior_occlusions"][i], it["occlusion_prior"], ATOL, f"level {i} prior occlusion")
    # the refined flows in grid_sample coordinates are the pixel flows + identity, normalised
    s = its[-1]["size"]
    flow = recon["deformation_list"][-1]
    assert flow.shape == (2, s, s, 2) and flow.abs().max() < 3


def test_compacted_warped_features_match(fx, recon):
    """The finest level's warped features: compacted entries (stride sub-sample + full-tensor sums)."""
    it = fx["outputs"]["decoder_internals"]["iterations"][5]
    for ours, key in ((recon["compensated_features"][0], "warped_feature"),
                      (recon["prior_features"][0], "warped_feature_prior")):
        ref = it[key]
        assert ref["__compact__"] and list(ours.shape) == ref["shape"]
        st = ref["stride"]
        assert_close(ours[..., ::st, ::st], ref["sub"], ATOL, key)
        assert abs(ours.double().sum().item() - ref["sum"]) <= 1e-3 * max(1.0, abs(ref["sum"])), key


def test_prediction_and_warped_image(fx, recon):
    d = fx["outputs"]["decoder"]
    assert_close(recon["prediction"], d["out"], ATOL, "prediction")
    assert_close(recon["deformed"], d["warp_img"], ATOL, "warp_img (finest input flow)")


@torch.no_grad()
def test_relative_animation_frames(fx, model):
    """demo.make_animation (relative, adapt scale): the fixture's normalised keypoints -> the same frames."""
    anim = fx["outputs"]["animation_relative"]
    src = fx["inputs"]["source"]
    cache = model.encode_source(src)
    init = {"value": anim["kp_driving_initial"]["kp"], "jacobian": anim["kp_driving_initial"]["jacobian"]}
    kp_s = cache["kp_source"]
    for t, frame in enumerate(anim["frames"]):
        kp_d = {"value": frame["kp_driving"]["kp"], "jacobian": frame["kp_driving"]["jacobian"]}
        norm = transfer_motion(kp_s, kp_d, init, relative=True, relative_jacobian=True, adapt_movement_scale=True,
                               official_batch0=True)
        assert_close(norm["value"], frame["kp_norm"]["kp"], KP_ATOL, f"frame {t} kp_norm")
        out = model.animate(cache, norm)
        assert_close(out["deformation"], frame["deformation"], ATOL, f"frame {t} deformation")
        assert_close(out["prediction"], frame["out"], ATOL, f"frame {t} prediction")


def test_batch1_source_cache_serves_a_batch(fx, model):
    """A batch-1 source cache with two driving frames gives what two separate calls give."""
    src, drv = fx["inputs"]["source"][:1], fx["inputs"]["driving"]
    with torch.no_grad():
        cache = model.encode_source(src)
        both = model.animate(cache, model.detect(drv))["prediction"]
        one = model(src, drv[1:])["prediction"]
    assert_close(both[1:], one, 1e-5, "batch-1 cache")


# -- the vox1 recipe: official parameter counts -------------------------------------------------------------
def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vox256_parameter_counts():
    keys = json.loads((FIXTURES / "mrfa" / "vox256_keys.json").read_text())
    nets, sub = keys["networks"], keys["sub_networks"]
    cfg = load_recipe("mrfa/vox256")
    with torch.device("meta"):
        m = build_model(cfg.model.to_dict(), image_size=cfg.image_size)
    assert _count(m.keypoint_detector) == nets["encoder"]["num_parameters"] == 12_283_462
    assert _count(m.motion) == nets["dense_motion"]["num_parameters"] == 37_730_268
    assert _count(m.encoder) + _count(m.decoder) == sub["decoder.generator"] == 43_844_739
    assert _count(m.compensator) + _count(m.encoder) + _count(m.decoder) == nets["decoder"]["num_parameters"]
    assert _count(m.compensator.structure.kp) == sub["decoder.kp"]
    assert _count(m.compensator.updater.corr_enc) == sub["decoder.corr_enc"]
    assert _count(m.compensator.updater.refine) == sub["decoder.refine"]
    # every official tensor has a thkit home of the same shape (the VGG-19 and loss pyramid excepted)
    zero = {"model": {f"module.{net}.{k}": v for net, sd in official_zero_state_dicts("mrfa").items()
                      for k, v in sd.items()}}
    sd = convert(zero)["model"]
    mine = m.state_dict()
    assert set(sd) == set(mine)
    bad = [k for k in sd if tuple(sd[k].shape) != tuple(mine[k].shape)]
    assert not bad, f"shape mismatches: {bad[:5]}"


# -- converter ---------------------------------------------------------------------------------------------
def _official_file(fx, extra=True):
    sd = {f"module.{net}.{k}": v for net, s in fx["state_dict"].items() for k, v in s.items()}
    if extra:
        sd["module.vgg.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
        sd["module.pyramid.downs.1.weight"] = torch.full((3, 1, 1, 1), float("nan"))
    return {"model": sd, "optimizer": {}, "epoch": 100}


def test_converter_reads_the_official_file_and_reports_the_vgg(fx, model):
    with pytest.warns(UserWarning, match=r"skipped 2 loss-only tensors \(1 of the perceptual loss's VGG-19"):
        sds = get_converter("mrfa")(_official_file(fx))
    assert set(sds) == {"model"}
    mine = model.state_dict()
    assert set(sds["model"]) == set(mine)
    assert all(torch.equal(sds["model"][k], mine[k]) for k in mine)


def test_detection_among_converters(fx):
    scores = {name: score for name, score, _ in detect_scores(_official_file(fx))}
    assert scores["mrfa"] == 1.0
    assert all(s < 0.999 for n, s in scores.items() if n != "mrfa"), scores
    fomm = {name: s for name, s, _ in detect_scores(
        {"model": {f"module.{k}": v for k, v in official_zero_state_dicts("fomm")["kp_detector"].items()}})}
    assert fomm["mrfa"] == 0.0


def test_converter_bad_input_is_named(fx):
    bad = _official_file(fx, extra=False)
    bad["model"]["module.decoder.mystery.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 official keys have no rule: decoder\.mystery\.weight"):
        convert(bad)
    missing = _official_file(fx, extra=False)
    missing["model"] = {k: v for k, v in missing["model"].items() if not k.startswith("module.dense_motion.")}
    with pytest.raises(CheckpointError, match=r"missing networks .*dense_motion\.\*"):
        convert(missing)
    with pytest.raises(CheckpointError, match="expected an official checkpoint"):
        convert({"generator": {}})


# -- recipe_from_official ----------------------------------------------------------------------------------
def test_recipe_from_official_vox1():
    keys = json.loads((FIXTURES / "mrfa" / "vox256_keys.json").read_text())
    cfg = dict(keys["model_params"])
    recipe = get_converter("mrfa").recipe_from_official(cfg)
    assert recipe["image_size"] == 256
    ref = load_recipe("mrfa/vox256")
    assert recipe["model"] == json.loads(json.dumps(ref.model.to_dict(), default=list))


def test_recipe_from_official_fixture_config_reproduces_the_fixture(fx, model):
    recipe = get_converter("mrfa").recipe_from_official(fx["config"], fx["meta"]["fixture_patches"])
    assert recipe["image_size"] == 64
    m = build_model(recipe["model"], image_size=recipe["image_size"]).eval()
    load_state_dict_strict(m, convert(fx["state_dict"])["model"], "model")
    assert recipe["model"] == json.loads(json.dumps(load_recipe("mrfa/tiny_fixture").model.to_dict(), default=list))


def test_recipe_from_official_bad_config_is_named(fx):
    cfg = copy.deepcopy(fx["config"])
    cfg["train_params"]["prior_model"] = "mystery"
    with pytest.raises(CheckpointError, match="prior_model: 'mystery'"):
        get_converter("mrfa").recipe_from_official(cfg, fx["meta"]["fixture_patches"])
    cfg = copy.deepcopy(fx["config"])
    cfg["raft_flow"]["mystery"] = 1
    with pytest.raises(CheckpointError, match="raft_flow.mystery"):
        get_converter("mrfa").recipe_from_official(cfg, fx["meta"]["fixture_patches"])
    with pytest.raises(CheckpointError, match="RAFT_CONTEXT_IN_CHANNELS"):
        get_converter("mrfa").recipe_from_official(
            fx["config"], {**fx["meta"]["fixture_patches"], "RAFT_CONTEXT_IN_CHANNELS": [1, 2, 3, 4, 5, 6]})


# -- training: mrfa/small on the synthetic data, the TPS + MRFA mix ------------------------------------------------
@pytest.fixture(scope="module")
def synth_batch(tmp_path_factory):
    from thkit.datasets.synthetic import SyntheticTalkingHeads

    root = tmp_path_factory.mktemp("synth") / "heads64"
    ds = SyntheticTalkingHeads(root=str(root), mode="train", image_size=64, synth=dict(videos=4, frames=6, seed=0))
    items = [ds[i] for i in range(2)]
    return {k: torch.stack([it[k] for it in items]) for k in ("source", "driving")}


def _train(recipe: str, batch: dict, steps: int, overrides: dict | None = None):
    """``steps`` Adam steps on one batch: the losses, the parameters before, the trained generator."""
    from mmengine.optim import OptimWrapperDict

    from thkit.engine.optim import AutocastOptimWrapper
    from thkit.engine.trainer import TalkingHeadTrainer

    cfg = load_recipe(recipe, overrides, size=64)
    torch.manual_seed(0)
    trainer = TalkingHeadTrainer(generator=cfg.model, losses=cfg.losses, image_size=64)
    before = {n: p.detach().clone() for n, p in trainer.generator.named_parameters()}
    wraps = OptimWrapperDict(generator=AutocastOptimWrapper(
        optimizer=torch.optim.Adam(trainer.generator.parameters(), lr=1e-3, betas=(0.5, 0.999))))
    losses = []
    for _ in range(steps):
        log = trainer.train_step(batch, wraps)
        assert all(torch.isfinite(v).all() for v in log.values() if isinstance(v, torch.Tensor)), log
        losses.append(float(log["loss_g"]))
    return losses, before, trainer.generator


def test_small_recipe_trains_on_synthetic_data(synth_batch):
    """mrfa/small (at 64 px): a few Adam steps on one synthetic batch lower its loss, and every part learns."""
    losses, before, gen = _train("mrfa/small", synth_batch, 3)
    assert losses[-1] < losses[0], losses
    moved = {n.split(".")[0] for n, p in gen.named_parameters() if not torch.equal(p, before[n])}
    assert {"keypoint_detector", "motion", "encoder", "compensator", "decoder"} <= moved, moved


def test_mix_tps_mrfa_builds_runs_and_trains(synth_batch):
    """MRFA's flow refinement after TPS motion: builds, refines the TPS flow at 6 levels, trains one step."""
    overrides = {"model.keypoint_detector.stage_widths": [8, 16, 32, 64],
                 "model.motion.block_expansion": 8, "model.motion.max_features": 32, "model.motion.num_blocks": 4,
                 "model.encoder.block_expansion": 4, "model.encoder.max_features": 16,
                 "model.decoder.block_expansion": 4, "model.decoder.max_features": 16,
                 "model.compensator.channels": [16, 16, 16, 16, 8, 4],
                 "model.compensator.structure.dim": 16,
                 "model.compensator.structure.driving_encoder": dict(block_expansion=4, max_features=16, num_blocks=4),
                 "model.compensator.structure.source_encoder": dict(block_expansion=4, max_features=16, num_blocks=4),
                 "model.compensator.updater": dict(type="CorrelationFlowUpdater", motion_width=16,
                                                   feature_dims=(16, 12), flow_dims=(16, 8), context_dim=24,
                                                   refine_width=16),
                 "losses.perceptual": dict(type="PerceptualPyramidLoss", allow_random=True, layer_weights=[10.0],
                                           scales=[1, 0.5], pyramid_mode="nearest")}
    cfg = load_recipe("mix/tps_mrfa", overrides, size=64)
    model = build_model(cfg.model.to_dict(), image_size=64).eval()
    assert type(model.motion).__name__ == "ThinPlateSplineMotion"
    assert type(model.compensator).__name__ == "MotionRefinementCompensator"
    with torch.no_grad():
        out = model(synth_batch["source"], synth_batch["driving"])
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert [f.shape[-1] for f in out["refined_flows"]] == [2, 4, 8, 16, 32, 64]
    # the refinement changed the TPS flow
    assert maxdiff(out["refined_flows"][3], out["init_flow"]) > 1e-4
    losses, before, gen = _train("mix/tps_mrfa", synth_batch, 1, overrides)
    assert len(losses) == 1
    assert any(not torch.equal(p, before[n]) for n, p in gen.compensator.named_parameters(prefix="compensator"))

"""SMAC against the official code's outputs (shared/fixtures/official/smac/tiny.pt, README §1.1, §4 quirks 9-13, §7).

The fixture's official state dicts go through the ``smac`` converter into ``recipes/smac/tiny_fixture.py`` (eval
mode).  Two paths are checked:

* **net_g from the official motion estimator outputs** (stored in full for this purpose): isolates our
  encoder, multi-scale codebook compensator and decoder, inference and training outputs (VQ indices exact);
* **end to end** (our keypoints -> our dense motion -> net_g), including relative-motion animation.  Here the
  keypoint detector's float32 rounding (~4e-6, the same as FOMM's, amplified by the fixture's x10 heatmap
  weights) moves the flow by ~5e-6 grid units, i.e. ~7e-4 px at 256 px, and the final image by ~2e-4.  That this
  is the CPU kernels' rounding and not our implementation is measured three ways: float32 rounding alone moves
  our prediction from the float64 one by 1.2e-4 to 4.8e-4 depending on the CPU kernels, and the official float32
  output is 3.8e-4 from it (tested below, against the kernel-independent float64 run);
  and the official code itself, run on this machine (same torch 2.15.0, 2 threads) with the fixture's weights,
  gives keypoints bit-identical to ours and a prediction 1.7e-4 to 2.2e-4 from its own fixture (four kernel
  settings), 4.6e-5 from ours.  See docs/status.md.

Large official tensors are compacted (README §1.1): every ``stride``-th element on the spatial dims plus sums.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES as OFFICIAL
from conftest import close_compact as _close
from conftest import load_strict_on_meta, official_copy, official_nets, official_zero_state_dicts

from thkit.builder import build, build_model
from thkit.checkpoint import convert_official
from thkit.convert import get_converter
from thkit.errors import CheckpointError
from thkit.interfaces import GenerationContext
from thkit.layers import kp2gaussian
from thkit.recipe import load_recipe
from thkit.transfer import transfer_motion

FIXTURES = OFFICIAL / "smac"  # ../shared/fixtures/official beside the repository

KP_ATOL = 1e-5
KP_NORM_ATOL = 3e-5  # relative keypoints: (kp_d - kp_init) * 2.09 (the fixture's movement scale) + kp_s
FLOW_ATOL = 1e-6  # net_g from the official flow (measured <= 2.4e-7)
FEAT_ATOL = 1e-4  # net_g features and images from the official flow (measured <= 4.2e-5)
E2E_FLOW_ATOL = 1e-4  # end to end (measured 5.7e-6; 2.2e-5 with oneDNN limited to SSE4.1 kernels)
E2E_ATOL = 5e-4  # end-to-end features and images (measured <= 2.0e-4)


def _norm(u8: torch.Tensor) -> torch.Tensor:
    return (u8.to(torch.float32) / 255.0 - 0.5) / 0.5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURES / "tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def inputs(fx):
    return _norm(fx["inputs"]["source_uint8"]), _norm(fx["inputs"]["driving_uint8"])


@pytest.fixture(scope="module")
def nets(fx):
    return official_nets("smac", fx["state_dict"])


@pytest.fixture(scope="module")
def official_motion_run(fx, nets, inputs):
    """Encoder + compensator + decoder on the official motion-estimator outputs, with the training outputs
    (compensator and decoder in training mode: GroupNorm / LayerNorm only, dropout 0, so the numbers equal eval)."""
    model, _ = nets
    src, drv = inputs
    me = fx["outputs"]["motion_estimator"]
    motion = dict(deformation=me["deformation"], occlusion_map=[me["occlusion_map"]],
                  driving_kp_heatmap=kp2gaussian(me["kp_driving"]["value"], (64, 64), 0.01))
    model.compensator.train()
    model.decoder.train()
    try:
        with torch.no_grad():
            feats = model.encoder(src)
            raw = [feats[i] for i in model.warp_levels]
            ctx = GenerationContext(features=raw, motion=motion, warper=model.warper, encoder=model.encoder,
                                    driving=drv)
            comp = model.compensator(None, ctx)
            dec = model.decoder(comp["features"], ctx)
    finally:
        model.compensator.eval()
        model.decoder.eval()
    return motion, feats, comp, dec


@pytest.fixture(scope="module")
def e2e_run(nets, inputs):
    model, _ = nets
    src, drv = inputs
    with torch.no_grad():
        return model(src, drv)


# --- configuration ---------------------------------------------------------------------------------------
def test_fixture_config_matches_recipe(fx):
    cfg = load_recipe("smac/tiny_fixture")
    g, m = fx["config"]["network_g"], cfg.model
    assert (m.encoder.nf, tuple(m.encoder.ch_mult)) == (g["nf"], tuple(g["ch_mult"]))
    assert m.keypoint_detector.num_kp == m.motion.num_kp == g["num_kp"]
    comp = m.compensator
    assert comp.motion.codebook.num_codes == g["codebook_size_motion"] and comp.motion.dim == g["dim_embd_motion"]
    assert comp.appearance.codebook.num_codes == g["codebook_size_app"] and comp.appearance.dim == g["dim_embd_app"]
    assert comp.motion.transformer.num_heads == comp.appearance.transformer.num_heads == g["n_head"]
    assert comp.motion.transformer.num_layers == g["n_layers_motion"] == 2
    assert m.encoder.norm_groups == fx["meta"]["fixture_patches"]["GROUPNORM_GROUPS"]
    assert comp.motion.motion_width == 128 // fx["meta"]["fixture_patches"]["MRFA_WIDTH_DIVISOR"]
    assert m.motion.align_corners is False and m.warper.align_corners is True  # quirk 5
    assert cfg.image_size == fx["meta"]["image_size"] == 256
    assert cfg.model.input_range == (-1, 1)


def test_inputs_reproduced_bit_for_bit(fx, inputs):
    import hashlib

    for t, key in zip(inputs, ("source_sha256", "driving_sha256")):
        assert hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest() == fx["inputs"][key]


# --- net_g from the official motion outputs ------------------------------------------------------------------
def test_encoder_taps(fx, official_motion_run, nets, inputs):
    """Source taps after official blocks 2/5/8/11/18; the driving frame's taps = official encode_driving."""
    model, _ = nets
    assert model.encoder.out_blocks == [2, 5, 8, 11, 18]
    ref = fx["outputs"]["net_g_encode_driving"]
    with torch.no_grad():
        drv = model.encoder(inputs[1])
    for i, size in enumerate(("256", "128", "64", "32")):
        _close(drv[i], ref[size], FEAT_ATOL, f"encode_driving[{size}]")


def test_flows_and_occlusions_from_official_motion(fx, official_motion_run):
    _, _, comp, _ = official_motion_run
    g = fx["outputs"]["net_g_inference"]
    assert len(comp["deformation_list"]) == len(g["deformation_list"]) == 5
    assert torch.equal(comp["deformation_list"][0], g["deformation_list"][0])
    for i, (a, b) in enumerate(zip(comp["deformation_list"], g["deformation_list"])):
        _close(a, b, FLOW_ATOL, f"deformation_list[{i}]")
    for i, (a, b) in enumerate(zip(comp["residual_deformations"], g["res_deform_list"])):
        _close(a, b, FLOW_ATOL, f"res_deform_list[{i}]")
    for i, (a, b) in enumerate(zip(comp["occlusion_list"], g["out_occ"])):  # quirk 9: sigmoid of sigmoid
        _close(a, b, FLOW_ATOL, f"out_occ[{i}]")


def test_compensated_features_from_official_motion(fx, official_motion_run):
    _, _, comp, _ = official_motion_run
    g = fx["outputs"]["net_g_inference"]
    for i, (a, b) in enumerate(zip(comp["warped_features"][::-1], g["app_before_comp_list"])):
        _close(a, b, FEAT_ATOL, f"app_before_comp_list[{i}]")
        _close(a, g["deform_feat_list"][i], FEAT_ATOL, f"deform_feat_list[{i}]")
    after = comp["features"][::-1]  # the compensator returns fine to coarse
    for i, (a, b) in enumerate(zip(after, g["app_comp_list"])):
        _close(a, b, FEAT_ATOL, f"app_comp_list[{i}]")
    _close(after[0], g["lq_feat"], FEAT_ATOL, "lq_feat (the appearance-compensated 32x32 feature, quirk 10)")


def test_prediction_from_official_motion(fx, official_motion_run, nets):
    model, _ = nets
    _, _, comp, dec = official_motion_run
    o = fx["outputs"]
    assert o["net_g_train"]["out_equals_inference_out"]
    _close(dec["prediction"], o["net_g_inference"]["out"], FEAT_ATOL, "out")
    # L_low's image: the generator on lq_feat without fusion (official out_lr and net_g.generator(lq_feat))
    _close(dec["prediction_lr"], o["net_g_train"]["out_lr"][0], FEAT_ATOL, "out_lr")
    _close(dec["prediction_lr"], o["net_g_generator_on_lq_feat"], FEAT_ATOL, "generator(lq_feat)")
    with torch.no_grad():
        assert "prediction_lr" not in model.decoder(comp["features"], {})  # eval: no low-res output


def test_vq_calls_exact(fx, official_motion_run):
    """Every VQ call of the official training forward: indices exact, prefixes as quirk 12, loss numbers."""
    _, _, comp, _ = official_motion_run
    calls = fx["outputs"]["vq_calls"]
    order = [("motion", 0), ("appearance", 0), ("appearance", 1), ("appearance", 2), ("appearance", 3),
             ("motion", 1), ("motion", 2), ("motion", 3)]  # the official call order
    for (kind, i), ref in zip(order, calls, strict=True):
        assert ref["quantizer"] == f"quantize_{'app' if kind == 'appearance' else kind}"
        ours = comp[f"{kind}_vq"][i]
        assert ours["num_codes_searched"] == ref["num_codes_searched"] == 4 * (i + 1)
        assert torch.equal(ours["indices"].reshape(-1, 1), ref["indices"]), f"{kind}@{i}: VQ indices differ"
        for key in ("loss", "perplexity", "mean_distance"):
            _close(ours[key], ref[key], 1e-5, f"{kind}@{i} {key}")
    t = fx["outputs"]["net_g_train"]
    for i, v in enumerate(comp["motion_vq"]):
        _close(v["loss"], t["codebook_loss_motion_list"][i], 1e-6, f"codebook_loss_motion_list[{i}]")
    for i, v in enumerate(comp["appearance_vq"]):
        _close(v["loss"], t["codebook_loss_app_list"][i], 1e-6, f"codebook_loss_app_list[{i}]")
        ref = t["app_recon_list"][i]  # [app_recon, app_feat_original, quant_app, app_feat, feat_com]
        _close(v["tokens"], ref[3], 1e-5, f"appearance target tokens [{i}]")
        _close(v["quantized"], ref[2], 1e-5, f"appearance quantized [{i}]")


def test_motion_reconstructions(fx, official_motion_run):
    _, _, comp, _ = official_motion_run
    ref = fx["outputs"]["net_g_train"]["motion_recon_list"]
    assert len(comp["motion_reconstructions"]) == len(ref) == 4
    for i, (a, b) in enumerate(zip(comp["motion_reconstructions"], ref)):
        _close(a / 31.5, b, FLOW_ATOL, f"motion_recon_list[{i}] (grid units)")  # ours are in pixels of the 64 grid


# --- end to end -------------------------------------------------------------------------------------------------
def test_end_to_end_inference(fx, e2e_run):
    out = e2e_run
    me, g = fx["outputs"]["motion_estimator"], fx["outputs"]["net_g_inference"]
    for name in ("kp_driving", "kp_source"):
        _close(out[name]["value"], me[name]["value"], KP_ATOL, f"{name}.value")
        _close(out[name]["jacobian"], me[name]["jacobian"], KP_ATOL, f"{name}.jacobian")
    _close(out["deformation"], me["deformation"], E2E_FLOW_ATOL, "motion deformation")
    _close(out["occlusion_map"][0], me["occlusion_map"], E2E_FLOW_ATOL, "motion occlusion_map")
    _close(out["driving_kp_heatmap"], me["driving_kp_heatmap"], 1e-4, "driving_kp_heatmap")
    _close(out["heatmap_representation"].squeeze(2), me["kp_heatmap"], 1e-4, "kp_heatmap")
    _close(out["mask"], me["mask"], 1e-4, "mask")
    for i, (a, b) in enumerate(zip(out["deformation_list"], g["deformation_list"])):
        _close(a, b, E2E_FLOW_ATOL, f"deformation_list[{i}]")
    for i, (a, b) in enumerate(zip(out["occlusion_list"], g["out_occ"])):
        _close(a, b, E2E_FLOW_ATOL, f"out_occ[{i}]")
    for i, (a, b) in enumerate(zip(out["compensated_features"][::-1], g["app_comp_list"])):
        _close(a, b, E2E_ATOL, f"app_comp_list[{i}]")
    _close(out["prediction"], g["out"], E2E_ATOL, "out")
    assert "motion_vq" not in out and "prediction_lr" not in out  # eval: inference outputs only


def test_end_to_end_gap_is_float32_rounding(fx, inputs, e2e_run):
    """The end-to-end prediction's gap to the official one (4.5e-5 to 2.0e-4 with torch's oneDNN kernels, 2.8e-4
    with them off) is float32 rounding, not a different computation.  Measured against the same network in float64,
    which does not depend on the CPU kernels torch picks:

    * the official float32 output is itself 3.8e-4 from the exact (float64) result: the fixture carries more
      than 1e-4 of its own rounding, so 1e-4 end to end against it is not a meaningful bound (the fixture's x10
      keypoint-heatmap weights amplify keypoint rounding, see the module docstring);
    * our computation, run exactly, is within E2E_ATOL of the official output;
    * our float32 output is about as far from the exact result as the official float32 output is: within 2x
      (measured 1.2e-4 to 4.8e-4 under four kernel settings: default, ``ATEN_CPU_CAPABILITY=default``,
      ``ONEDNN_MAX_CPU_ISA=SSE41``, oneDNN off).
    """
    model64 = official_nets("smac", fx["state_dict"])[0].double()  # the same (float32-valued) weights
    src, drv = inputs
    with torch.no_grad():
        exact = model64(src.double(), drv.double())["prediction"]
    ours, official = e2e_run["prediction"].double(), fx["outputs"]["net_g_inference"]["out"].double()
    official_rounding = (official - exact).abs().max().item()
    ours_rounding = (ours - exact).abs().max().item()
    assert official_rounding > 1e-4, official_rounding  # (why 1e-4 cannot be asserted end to end)
    assert official_rounding <= E2E_ATOL, official_rounding
    assert ours_rounding <= 2 * official_rounding, (ours_rounding, official_rounding)


def test_discriminator(fx, nets):
    _, disc = nets
    o = fx["outputs"]
    with torch.no_grad():
        for name, img in (("net_d_on_out", o["net_g_inference"]["out"]),
                          ("net_d_on_driving", _norm(fx["inputs"]["driving_uint8"]))):
            res = disc(img)
            _close(res["prediction_map"]["1"], o[name], 1e-5, name)
            assert len(res["feature_maps"]["1"]) == 5


def test_animation_relative(fx, nets):
    """demo.make_animation(relative=True, adapt_movement_scale=True): batch-0 hull scale, relative Jacobians."""
    model, _ = nets
    a = fx["outputs"]["animation_relative"]
    src = _norm(fx["inputs"]["source_uint8"])
    frames = [_norm(torch.roll(fx["inputs"]["driving_uint8"], shifts=(2 * t, 3 * t), dims=(2, 3))) for t in range(3)]
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
            # the transfer alone, on the official keypoints, is exact (float64 scalar on float32, batch-0 scale)
            exact = transfer_motion(fx["outputs"]["motion_estimator"]["kp_source"], ref["kp_driving"],
                                    a["kp_driving_initial"], adapt_movement_scale=True, official_batch0=True)
            assert torch.equal(exact["value"], ref["kp_norm"]["value"])
            out = model.animate(cache, kp_norm)
            _close(out["deformation"], ref["deformation"], E2E_FLOW_ATOL, f"frame {t} deformation")
            _close(out["occlusion_map"][0], ref["occlusion_map"], E2E_FLOW_ATOL, f"frame {t} occlusion_map")
            _close(out["deformation_list"][-1], ref["deformation_final"], E2E_FLOW_ATOL, f"frame {t} final flow")
            _close(out["prediction"], ref["out"], E2E_ATOL, f"frame {t} out")


# --- full size: parameter counts and the official key list ------------------------------------------------------
@pytest.fixture(scope="module")
def vox256():
    cfg = load_recipe("smac/vox256")
    with torch.device("meta"):  # shapes and counts only
        model = build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))
        disc = build("discriminator", cfg.discriminator.to_dict(), path="discriminator")
    return cfg, model, disc


def _count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def test_vox256_parameter_counts_equal_official(vox256):
    cfg, model, disc = vox256
    keys = json.loads((FIXTURES / "vox256_keys.json").read_text())
    nets = keys["networks"]
    assert _count(model.keypoint_detector) == 14_258_268 == keys["sub_networks"]["motion_estimator.kp_detector"]
    assert _count(model.motion) == 37_796_433 == keys["sub_networks"]["motion_estimator.dense_motion_network"]
    motion_estimator = _count(model.keypoint_detector) + _count(model.motion)
    assert motion_estimator == 52_054_701 == nets["motion_estimator"]["num_parameters"]
    net_g = _count(model.encoder) + _count(model.compensator) + _count(model.decoder)
    assert net_g == 30_118_854 == nets["net_g"]["num_parameters"]
    assert _count(disc) == 6_960_961 == nets["net_d"]["num_parameters"]
    assert _count(model) == 30_118_854 + 52_054_701
    # the official hyper-parameters
    comp = model.compensator
    assert comp.motion.codebook.weight.shape == (1024, 32) and comp.appearance.codebook.weight.shape == (1024, 256)
    assert comp.motion.transformer.position_emb.shape == (1024, 32)
    assert comp.appearance.transformer.position_emb.shape == (1024, 256)
    assert [comp.motion.codes(i) for i in range(4)] == [slice(0, 256 * (i + 1)) for i in range(4)]
    assert model.encoder.out_blocks == [2, 5, 8, 11, 18] and sorted(model.decoder.fuse_at) == [9, 12, 15]


def test_vox256_official_keys_convert_completely(vox256):
    _, model, disc = vox256
    official = official_zero_state_dicts("smac")
    sds = get_converter("smac")(official)
    assert len(sds["model"]) == 472 + 150 and len(sds["discriminator"]) == 28
    load_strict_on_meta(sds, model=model, discriminator=disc)


# --- converter: BasicSR files, EMA choice, errors ----------------------------------------------------------------
_official = official_copy


def test_prepare_basicsr_files_prefers_ema(fx):
    off = _official(fx)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in off["net_g"].items()}
    files = [{"params": off["motion_estimator"]},
             {"params": off["net_g"], "params_ema": {"module." + k: v for k, v in ema.items()}},
             {"params": off["net_d"]}]
    sds = convert_official(files, "smac")  # use_ema defaults to True, as the official demo
    key = "compensator.motion.codebook.embedding.weight"
    assert torch.equal(sds["model"][key], ema["quantize_motion.embedding.weight"])
    assert set(sds) == {"model", "discriminator"}
    sds = convert_official(files[:2], "smac", use_ema=False)
    assert torch.equal(sds["model"][key], off["net_g"]["quantize_motion.embedding.weight"])
    assert set(sds) == {"model"}  # the demo files: no discriminator
    with pytest.warns(UserWarning, match="params_ema"):
        convert_official([{"params": off["net_g"]}, {"params": off["motion_estimator"]}], "smac")


def test_converter_errors(fx):
    conv = get_converter("smac")
    off = _official(fx)
    off["net_g"]["refine.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unknown keys.*refine\.extra\.weight"):
        conv(off)
    off = _official(fx)
    del off["net_g"]["fuse_convs_dict.128.scale.2.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys.*fuse_convs_dict\.128\.scale\.2\.bias"):
        conv(off)
    off = _official(fx)
    off["net_g"] = {k: v for k, v in off["net_g"].items() if not k.startswith("motion_block.0.")}
    with pytest.raises(CheckpointError, match=r"missing keys.*motion_block\.0"):
        conv(off)
    off = _official(fx)
    off["net_g"] = {k: v for k, v in off["net_g"].items() if not k.startswith("to_app_feat_128")}
    with pytest.raises(CheckpointError, match=r"missing keys.*to_app_feat_128"):
        conv(off)
    off = _official(fx)
    del off["motion_estimator"]["kp_detector.kp.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys.*kp_detector\.kp\.bias"):
        conv(off)
    off = _official(fx)
    del off["motion_estimator"]
    with pytest.raises(CheckpointError, match="missing networks: motion_estimator"):
        conv(off)
    with pytest.raises(CheckpointError, match="neither 'params' nor 'params_ema'"):
        convert_official([{"weights": {}}], "smac")

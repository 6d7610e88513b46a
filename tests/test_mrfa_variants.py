"""MRFA's other official variants: ``prior_model: fomm`` / ``tpsm`` and ``raft_flow.prior_only``.

The official numbers (parameter counts, state-dict keys and shapes of every network) are in
tests/data/mrfa_variants_keys.json, generated from the official code (JialeTao/MRFA @ 20f935f, config/vox1.yaml with
the variant's prior_model / prior_only; see its "source" entry); CI cannot import the official code.  Output parity
with the official variants was measured outside CI (official modules at tiny widths, random weights, converted by
thkit's converter; docs/methods/mrfa.md lists the figures).  Here: the counts, key mapping completeness, prior
detection and the recipe named for a checkpoint, recipe_from_official, and forward equivalence of the new options with
parts already parity-tested against the official fixture (tests/test_mrfa.py, tests/test_tpsmm.py).
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES
from test_mrfa import _train, convert, synth_batch  # noqa: F401 - synth_batch is a fixture used below

from thkit.builder import build, build_model
from thkit.checkpoint import load_state_dict_strict
from thkit.convert import detect_scores, get_converter
from thkit.errors import CheckpointError
from thkit.layers import make_coordinate_grid
from thkit.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = json.loads((Path(__file__).parent / "data" / "mrfa_variants_keys.json").read_text())
VOX = json.loads((FIXTURES / "mrfa" / "vox256_keys.json").read_text())
VARIANTS = {"fomm_prior": "mrfa/vox256_fomm_prior", "tps_prior": "mrfa/vox256_tps_prior",
            "prior_only": "mrfa/vox256_prior_only"}


def _count(module) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _meta_model(recipe: str, overrides: dict | None = None):
    cfg = load_recipe(recipe, overrides)
    with torch.device("meta"):
        return build_model(cfg.model.to_dict(), image_size=cfg.image_size)


def _official_keys(variant: str) -> dict[str, list[int]]:
    """Every official key of a variant (``{net}.{key}``: shape), the loss-only vgg/pyramid excepted."""
    v = DATA["variants"][variant]
    out = {}
    for net, info in v["networks"].items():
        keys = VOX["networks"][net]["keys"] if net in v["same_as_vox256"] else info["keys"]
        out.update({f"{net}.{k}": shape for k, shape in keys.items()})
    return out


def _official_file(keys: dict[str, list[int]]) -> dict:
    """An official-form checkpoint of meta tensors with these keys (the converter only renames)."""
    sd = {f"module.{k}": torch.empty(shape, device="meta") for k, shape in keys.items()}
    sd["module.vgg.slice1.0.weight"] = torch.empty(64, 3, 3, 3, device="meta")
    return {"model": sd, "optimizer": {}, "epoch": 100}


# -- official parameter counts (tests/data/mrfa_variants_keys.json) ------------------------------------------------
def test_fomm_prior_parameter_counts():
    v, m = DATA["variants"]["fomm_prior"]["networks"], _meta_model("mrfa/vox256_fomm_prior")
    assert _count(m.keypoint_detector) == v["encoder"]["num_parameters"] == 14_153_592
    assert _count(m.motion) == v["dense_motion"]["num_parameters"] == 37_730_268
    assert _count(m.encoder) + _count(m.decoder) + _count(m.compensator) == v["decoder"]["num_parameters"] \
        == 64_325_476


def test_tps_prior_parameter_counts():
    v, m = DATA["variants"]["tps_prior"]["networks"], _meta_model("mrfa/vox256_tps_prior")
    assert _count(m.keypoint_detector) == v["encoder"]["num_parameters"] == 11_227_812
    assert _count(m.motion) == v["dense_motion"]["num_parameters"] == 37_799_868
    assert _count(m.encoder) + _count(m.decoder) + _count(m.compensator) == v["decoder"]["num_parameters"] \
        == 64_325_476


def test_prior_only_parameter_counts():
    """The official prior-only RaftFlow still builds the generator's channel blocks, which its forward never calls;
    thkit's decoder without prior fusion has none, so the counts differ by exactly those."""
    v = DATA["variants"]["prior_only"]
    m = _meta_model("mrfa/vox256_prior_only")
    assert _count(m.keypoint_detector) == v["networks"]["encoder"]["num_parameters"] == 12_283_462
    assert _count(m.motion) == v["networks"]["dense_motion"]["num_parameters"] == 37_730_268
    assert _count(m.compensator) == 0 and m.compensator.structure is None and m.decoder.channel_block is None
    unused = v["sub_networks"]["decoder.generator.channel_block"]
    assert _count(m.encoder) + _count(m.decoder) + unused == v["networks"]["decoder"]["num_parameters"] == 43_844_739


# -- the converter: every official key maps, shapes match; the prior is detected -------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_official_key_maps(variant):
    keys = _official_keys(variant)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd = get_converter("mrfa")(_official_file(keys))["model"]
    mine = {k: tuple(v.shape) for k, v in _meta_model(VARIANTS[variant]).state_dict().items()}
    assert set(sd) == set(mine), (sorted(set(sd) - set(mine))[:5], sorted(set(mine) - set(sd))[:5])
    bad = [k for k in sd if tuple(sd[k].shape) != mine[k]]
    assert not bad, f"shape mismatches: {bad[:5]}"
    skipped_unused = [str(w.message) for w in caught if "never uses" in str(w.message)]
    if variant == "prior_only":  # the unused channel blocks and the structure encoder's down kernel
        n = sum(k.startswith(("decoder.generator.channel_block.", "down.")) for k in keys)
        assert skipped_unused and f"skipped {n} tensors" in skipped_unused[0]
        assert len(sd) == len(keys) - n
    else:
        assert not skipped_unused and len(sd) == len(keys)


@pytest.mark.parametrize("variant,prior,only", [("fomm_prior", "fomm", False), ("tps_prior", "tpsm", False),
                                                ("prior_only", "mtia", True)])
def test_prior_is_detected_and_the_recipe_named(variant, prior, only):
    ck = _official_file(_official_keys(variant))
    conv = get_converter("mrfa")
    scores = {name: (score, why) for name, score, why in detect_scores(ck)}
    assert scores["mrfa"][0] == 1.0 and f"prior_model {prior}" in scores["mrfa"][1]
    assert all(s < conv.FIT for name, (s, _) in scores.items() if name != "mrfa"), scores
    assert conv.checkpoint_recipe(ck) == VARIANTS[variant]
    settings = conv.checkpoint_settings(ck)
    assert settings["model.compensator.prior_only"] is only
    cfg = load_recipe(VARIANTS[variant])
    assert all(cfg.model.get(k.split(".")[1]).get(k.split(".")[2]) == v for k, v in settings.items())


def test_prior_only_of_another_prior_names_the_switch():
    keys = _official_keys("tps_prior")
    keys = {k: s for k, s in keys.items() if not k.startswith(("decoder.kp", "decoder.corr_enc", "decoder.refine",
                                                               "decoder.to_context", "decoder.pos_embedding"))}
    assert get_converter("mrfa").checkpoint_recipe(_official_file(keys)) == (
        "mrfa/vox256_tps_prior --cfg-options model.compensator.prior_only=True model.decoder.fuse_prior=False")
    partial = {k: s for k, s in _official_keys("fomm_prior").items() if not k.startswith("decoder.refine.")}
    with pytest.raises(CheckpointError, match=r"part of RaftFlow's refinement modules; missing decoder\.refine\*"):
        convert(_official_file(partial))


def _to_official(state_dict: dict) -> dict:
    """thkit MRFA weights -> the official layout (the converter's table backwards), for a file-level test."""
    rules = [("keypoint_detector.backbone.", "encoder.fg_encoder."), ("keypoint_detector.", "encoder."),
             ("motion.", "dense_motion."), ("encoder.", "decoder.generator."), ("decoder.", "decoder.generator."),
             ("compensator.structure.down.", "down."), ("compensator.structure.", "decoder."),
             ("compensator.updater.", "decoder.")]
    out = {}
    for k, v in state_dict.items():
        new, old = next((new, old) for old, new in rules if k.startswith(old))
        out["module." + new + k[len(old):]] = v
    return {"model": out, "optimizer": {}, "epoch": 100}


def test_a_checkpoint_of_another_prior_is_named_in_one_line(tmp_path):
    """create_model(recipe, checkpoint=...) and convert_checkpoint(..., recipe=...) with the file of another variant:
    one line naming the recipe to use."""
    import thkit

    cfg = load_recipe("mrfa/tiny_fixture").model.to_dict()
    cfg["keypoint_detector"] = dict(type="FOMMKeypointDetector", num_kp=10, block_expansion=4, max_features=16,
                                    num_blocks=3, temperature=0.1, scale_factor=0.25, single_jacobian_map=True)
    model = build_model(cfg, image_size=64)
    ck = _to_official(model.state_dict())
    # the converter gives the weights back
    back = convert(ck)["model"]
    assert set(back) == set(model.state_dict()) and all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    path = tmp_path / "mrfa_fomm_prior.pth"
    torch.save(ck, path)
    with pytest.raises(CheckpointError) as err:
        thkit.create_model("mrfa/tiny_fixture", checkpoint=path)
    msg = str(err.value)
    assert "\n" not in msg and "an official mrfa checkpoint" in msg
    assert "model.keypoint_detector.type='FOMMKeypointDetector' (the recipe has 'TokenPoseKeypointDetector')" in msg
    assert msg.endswith("use the recipe mrfa/vox256_fomm_prior")
    with pytest.raises(CheckpointError) as err:  # thkit convert --recipe: the same line
        thkit.convert_checkpoint(path, tmp_path / "folder", method="mrfa", recipe="mrfa/tiny_fixture")
    assert "\n" not in str(err.value) and str(err.value).endswith(
        "does not fit recipe mrfa/tiny_fixture: the checkpoint has model.keypoint_detector.type='FOMMKeypointDetector' "
        "(the recipe has 'TokenPoseKeypointDetector'); use the recipe mrfa/vox256_fomm_prior")
    assert not (tmp_path / "folder").exists()


# -- recipe_from_official maps prior_model and prior_only ------------------------------------------------------------
def _vox1(prior: str, prior_only: bool = False) -> dict:
    cfg = copy.deepcopy(VOX["model_params"])
    cfg.update({k: copy.deepcopy(v) for k, v in DATA["config_sections"].items() if k != "note"})
    cfg["train_params"] = {"prior_model": prior, "num_epochs": 100, "bg_start": 1000}
    cfg["raft_flow"]["prior_only"] = prior_only
    return cfg


@pytest.mark.parametrize("prior,only,recipe", [("fomm", False, "mrfa/vox256_fomm_prior"),
                                               ("tpsm", False, "mrfa/vox256_tps_prior"),
                                               ("mtia", True, "mrfa/vox256_prior_only"),
                                               ("mtia", False, "mrfa/vox256")])
def test_recipe_from_official_maps_the_variant(prior, only, recipe):
    got = get_converter("mrfa").recipe_from_official(_vox1(prior, only))
    assert got["image_size"] == 256
    assert got["model"] == json.loads(json.dumps(load_recipe(recipe).model.to_dict(), default=list))


def test_recipe_from_official_prior_only_on_the_tps_prior():
    got = get_converter("mrfa").recipe_from_official(_vox1("tpsm", True))
    ref = load_recipe("mrfa/vox256_tps_prior", {"model.compensator.prior_only": True, "model.decoder.fuse_prior": False,
                                                "model.compensator.structure": None, "model.compensator.updater": None})
    assert got["model"] == json.loads(json.dumps(ref.model.to_dict(), default=list))


def test_recipe_from_official_bad_variant_settings_are_named():
    conv = get_converter("mrfa")
    cfg = _vox1("mystery")
    with pytest.raises(CheckpointError, match="train_params.prior_model: 'mystery'"):
        conv.recipe_from_official(cfg)
    cfg = _vox1("tpsm")
    cfg["tpsm_dense_motion"]["multi_mask"] = True
    with pytest.raises(CheckpointError, match="tpsm_dense_motion.multi_mask: True"):
        conv.recipe_from_official(cfg)
    cfg = _vox1("tpsm")
    cfg["tpsm_kp_detector"]["num_tps"] = 8
    with pytest.raises(CheckpointError, match="tpsm_dense_motion.num_tps: 10 differs"):
        conv.recipe_from_official(cfg)
    cfg = _vox1("fomm")
    cfg["fomm_kp_detector"]["estimate_occlusion"] = True
    with pytest.raises(CheckpointError, match="fomm_kp_detector.estimate_occlusion"):
        conv.recipe_from_official(cfg)


# -- forward equivalence of the new options ----------------------------------------------------------------------------
@torch.no_grad()
def test_fomm_prior_detector_shares_one_jacobian_map():
    """MRFA's KPDetector: keypoints = soft-argmax on the cropped heatmap, every Jacobian = its heatmap's weighted sum
    of the ONE 4-channel map (written out here from modules/kp_detector.py's forward)."""
    torch.manual_seed(0)
    kd = build("keypoint", dict(type="FOMMKeypointDetector", num_kp=10, block_expansion=4, max_features=16,
                                num_blocks=3, temperature=0.1, scale_factor=0.25, single_jacobian_map=True),
               "keypoint_detector").eval()
    kd.jacobian.weight.normal_(0, 0.01)
    assert kd.jacobian.out_channels == 4
    img = torch.rand(2, 3, 64, 64)
    got = kd(img)
    feat = kd.predictor(kd.down(img))
    logits = kd.kp(feat)
    b, k, h, w = logits.shape
    assert (h, w) == (10, 10)  # 16 px, 7x7 head without padding
    heat = F.softmax(logits.view(b, k, -1) / 0.1, dim=2).view(b, k, h, w)
    grid = make_coordinate_grid(h, w)
    value = (heat.unsqueeze(-1) * grid).sum(dim=(2, 3))
    jac = (heat.unsqueeze(2) * kd.jacobian(feat).view(b, 1, 4, h, w)).view(b, k, 4, -1).sum(-1).view(b, k, 2, 2)
    torch.testing.assert_close(got["value"], value, atol=1e-6, rtol=0)
    torch.testing.assert_close(got["jacobian"], jac, atol=1e-6, rtol=0)
    assert (got["jacobian"][:, 0] - got["jacobian"][:, 1]).abs().max() > 1e-4  # shared map, per-keypoint weights


@torch.no_grad()
def test_tps_prior_motion_is_batchnorm_with_one_logit_occlusion():
    """ThinPlateSplineMotion(norm='batch', multi_mask=False): a BatchNorm hourglass and ONE occlusion whose logits
    are returned; the flow is the softmax blend of the parity-tested TPS transforms."""
    torch.manual_seed(0)
    motion = build("motion", dict(type="ThinPlateSplineMotion", num_tps=2, block_expansion=8, max_features=32,
                                  num_blocks=3, multi_mask=False, background_predictor=None, use_background=False,
                                  norm="batch"), "motion").eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in motion.hourglass.modules())
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in motion.modules())
    src = torch.rand(2, 3, 64, 64)
    kp_s, kp_d = {"value": torch.rand(2, 10, 2) * 1.6 - 0.8}, {"value": torch.rand(2, 10, 2) * 1.6 - 0.8}
    out = motion(src, kp_s, kp_d)
    assert len(out["occlusion_map"]) == 1 and out["occlusion_logits"].shape == (2, 1, 16, 16)
    torch.testing.assert_close(out["occlusion_map"][0], torch.sigmoid(out["occlusion_logits"]))
    img = motion.downsample(src)
    trans = motion.transformations((16, 16), kp_s, kp_d)
    hg_in = torch.cat([motion.heatmap_representation((16, 16), kp_s, kp_d),
                       motion.deform_source(img, trans).reshape(2, -1, 16, 16)], dim=1)
    feat = motion.hourglass(hg_in)
    contribution = F.softmax(motion.maps(feat), dim=1)
    torch.testing.assert_close(out["deformation"], (trans * contribution.unsqueeze(-1)).sum(1))
    torch.testing.assert_close(out["occlusion_logits"], motion.occlusion[0](feat))


@torch.no_grad()
def test_structure_correlation_averages_five_point_groups():
    """kp_group_size=5 is the official ``kp.view(B, -1, 5, 2).mean(2)`` before the structure encoders."""
    torch.manual_seed(0)
    cfg = dict(type="StructureCorrelation", num_kp=2, dim=8, image_size=64,
               driving_encoder=dict(block_expansion=4, max_features=8, num_blocks=3),
               source_encoder=dict(block_expansion=4, max_features=8, num_blocks=3))
    grouped = build("compensator", {**cfg, "kp_group_size": 5}, "structure").eval()
    plain = build("compensator", cfg, "structure").eval()
    plain.load_state_dict(grouped.state_dict())
    src, kp_s, kp_d = torch.rand(2, 3, 64, 64), torch.rand(2, 10, 2) * 2 - 1, torch.rand(2, 10, 2) * 2 - 1
    got = grouped(src, kp_s, kp_d)
    ref = plain(src, kp_s.view(2, 2, 5, 2).mean(2), kp_d.view(2, 2, 5, 2).mean(2))
    torch.testing.assert_close(got["volume"], ref["volume"], atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"expects keypoints \(B, 10, 2\) \(num_kp=2 x kp_group_size=5\)"):
        grouped(src, kp_s[:, :5], kp_d[:, :5])


@pytest.fixture(scope="module")
def fixture_models():
    """recipes/mrfa/tiny_fixture with the official fixture's weights, refining and prior-only."""
    fx = torch.load(FIXTURES / "mrfa" / "tiny.pt", weights_only=True)
    sd = convert(fx["state_dict"])["model"]
    full = build_model(load_recipe("mrfa/tiny_fixture").model.to_dict(), image_size=64).eval()
    load_state_dict_strict(full, sd, "model")
    cfg = load_recipe("mrfa/tiny_fixture", {"model.compensator.prior_only": True, "model.decoder.fuse_prior": False})
    only = build_model(cfg.model.to_dict(), image_size=64).eval()
    unused = ("compensator.", "decoder.channel_block.")
    load_state_dict_strict(only, {k: v for k, v in sd.items() if not k.startswith(unused)}, "model")
    return fx, full, only


@torch.no_grad()
def test_prior_only_warps_every_level_by_the_prior_flow(fixture_models):
    """prior_only: the refining model's prior branch (parity-tested per level against the official fixture:
    prior occlusions at every level, prior-warped features at the finest) is all there is; the prediction is the
    decoder without channel blocks on it, and warp_img the source warped by the prior flow resized to the image
    (written out from RaftFlow.forward's prior_only branch)."""
    fx, full, only = fixture_models
    src, drv = fx["inputs"]["source"], fx["inputs"]["driving"]
    ref, got = full(src, drv), only(src, drv)
    torch.testing.assert_close(got["deformation"], fx["outputs"]["dense_motion"]["deformation"], atol=1e-4, rtol=0)
    for a, b in zip(got["compensated_features"], ref["prior_features"]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for a, b in zip(got["occlusion_list"], ref["prior_occlusions"]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    flow = F.interpolate(got["deformation"].permute(0, 3, 1, 2), size=(64, 64), mode="bilinear", align_corners=True)
    warp = F.grid_sample(src, flow.permute(0, 2, 3, 1), align_corners=False)
    torch.testing.assert_close(got["deformed"], warp, atol=1e-6, rtol=0)
    dec = only.decoder
    warped, occ = got["compensated_features"][::-1], got["occlusion_list"]
    x = warped[0] * occ[0]
    for i in range(5):
        x = dec.up_blocks[i](dec.resblock[i](x))
        x = warped[i + 1] * occ[i + 1] + x * (1 - occ[i + 1])
    pred = torch.sigmoid(dec.final(x)) * (1 - occ[-1]) + warp * occ[-1]
    torch.testing.assert_close(got["prediction"], pred, atol=1e-6, rtol=0)
    assert (got["prediction"] - ref["prediction"]).abs().max() > 1e-3  # no refinement: another image


# -- mrfa/small_tps_prior trains ---------------------------------------------------------------------------------------
def test_small_tps_prior_trains_a_step(synth_batch):  # noqa: F811
    """mrfa/small_tps_prior (at 64 px): one Adam step on synthetic data moves every part, the TPS dropout applies."""
    cfg = load_recipe("mrfa/small_tps_prior", None, size=64)
    assert cfg.model.motion.type == "ThinPlateSplineMotion" and cfg.model.compensator.structure.kp_group_size == 5
    hooks = [h for h in cfg.custom_hooks if h.get("attribute") == "dropout_p"]
    assert hooks and hooks[0]["milestones"][0] == (0, 0.1) and hooks[0]["milestones"][-1] == (7000, 0.0)
    losses, before, gen = _train("mrfa/small_tps_prior", synth_batch, 1, {"model.motion.dropout_p": 0.1})
    assert len(losses) == 1
    moved = {n.split(".")[0] for n, p in gen.named_parameters() if not torch.equal(p, before[n])}
    assert {"keypoint_detector", "motion", "encoder", "compensator", "decoder"} <= moved, moved

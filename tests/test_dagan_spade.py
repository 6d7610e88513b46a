"""DaGAN's SPADE variant (official ``SPADEDepthAwareGenerator``): the SPADE layers against a plain reference, the
official full-size key layout and parameter count through the converter, generator-variant detection and its
one-line errors, ``recipe_from_official`` and ``dagan/small_spade`` training a step.

Parity with the official code itself (random weights, 128 px) is measured outside the tests, since the official
code is not part of thkit: see docs/methods/dagan.md.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES as OFFICIAL
from conftest import load_strict_on_meta, official_zero_state_dicts

from thkit.builder import build, build_model
from thkit.convert import detect_scores, get_converter
from thkit.convert.dagan import generator_variant
from thkit.decode.spade import SPADEDecoder
from thkit.errors import CheckpointError
from thkit.layers.spade import SPADEResBlock
from thkit.recipe import load_recipe

FIXTURES = OFFICIAL / "dagan"
SPADE_PARAMETERS = 67_545_305

pytestmark = pytest.mark.usefixtures("one_thread")


def _keys():
    return json.loads((FIXTURES / "vox256_keys.json").read_text())


def _spade_checkpoint(random: bool = True) -> dict:
    """An official-layout checkpoint with the SPADE generator (random tensors of the official shapes) and the other
    networks of vox256_keys.json (zeros)."""
    info = _keys()["variant_networks"]["generator_SPADEDepthAwareGenerator"]
    ints = info["non_float32_keys"]
    g = torch.Generator().manual_seed(0)
    gen = {k: torch.zeros(s, dtype=torch.int64) if k in ints else
           (torch.randn(s, generator=g) if random else torch.zeros(s)) for k, s in info["keys"].items()}
    return {**official_zero_state_dicts("dagan"), "generator": gen}


def _count(m):
    return sum(p.numel() for p in m.parameters())


# --- SPADE layers against a plain reference -------------------------------------------------------------------
def _sn_weight(conv):
    """Old-style spectral norm in eval: ``weight_orig / (u . W v)`` with the stored ``u``, ``v``."""
    w = conv.weight_orig
    return w / torch.dot(conv.weight_u, w.flatten(1) @ conv.weight_v)


def _spade_ref(norm, x, label, stride):
    m = label[:, :, ::stride, ::stride]  # nearest downsampling by an integer factor
    xn = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    a = F.relu(F.conv2d(m, norm.mlp_shared[0].weight, norm.mlp_shared[0].bias, padding=1))
    gamma = F.conv2d(a, norm.mlp_gamma.weight, norm.mlp_gamma.bias, padding=1)
    beta = F.conv2d(a, norm.mlp_beta.weight, norm.mlp_beta.bias, padding=1)
    return xn * (1 + gamma) + beta


def test_spade_resblock_matches_plain_reference():
    torch.manual_seed(0)
    lrelu = lambda t: torch.where(t > 0, t, 0.2 * t)  # noqa: E731
    x, label = torch.randn(2, 12, 8, 8), torch.rand(2, 5, 32, 32)
    with torch.no_grad():
        for cin, cout in ((12, 6), (12, 12)):
            blk = SPADEResBlock(cin, cout, label_channels=5, hidden_channels=8).eval()
            assert blk.learned_shortcut == (cin != cout) and hasattr(blk, "conv_s") == (cin != cout)
            xs = F.conv2d(_spade_ref(blk.norm_s, x, label, 4), _sn_weight(blk.conv_s)) if cin != cout else x
            dx = F.conv2d(lrelu(_spade_ref(blk.norm_0, x, label, 4)), _sn_weight(blk.conv_0), blk.conv_0.bias,
                          padding=1)
            dx = F.conv2d(lrelu(_spade_ref(blk.norm_1, dx, label, 4)), _sn_weight(blk.conv_1), blk.conv_1.bias,
                          padding=1)
            out = blk(x, label)
            assert out.shape == (2, cout, 8, 8)
            assert (out - (xs + dx)).abs().max() < 1e-4
    # training: one power iteration per forward moves the spectral norm's u (as torch's spectral_norm does)
    blk = SPADEResBlock(12, 6, label_channels=5, hidden_channels=8).train()
    u = blk.conv_0.weight_u.clone()
    blk(x, label)
    assert not torch.equal(u, blk.conv_0.weight_u)
    plain = SPADEResBlock(12, 6, label_channels=5, hidden_channels=8, spectral_norm=False)
    assert set(plain.conv_0.state_dict()) == {"weight", "bias"}


def test_spade_decoder_label_image_and_shapes():
    torch.manual_seed(0)
    dec = SPADEDecoder(in_channels=8, label_channels=2, out_features=4, hidden_channels=8, num_middle_blocks=1)
    deformed, occ = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 8, 8)
    ctx = {"deformed": deformed, "motion": {"occlusion_map": [occ]}}
    ref = deformed * F.interpolate(occ, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(dec.label_image(ctx), ref)
    assert torch.equal(dec.label_image({"deformed": deformed, "motion": {"occlusion_map": []}}), deformed)
    out = dec([torch.rand(2, 8, 8, 8)], ctx)["prediction"]
    assert out.shape == (2, 3, 32, 32) and 0 < out.min() and out.max() < 1
    with pytest.raises(ValueError, match="expects the coarsest feature with 8 channels"):
        dec([torch.rand(2, 4, 8, 8)], ctx)
    with pytest.raises(ValueError, match=r"upsamples the 4x4 feature 4 times.*\(B, 3, 16, 16\)"):
        dec([torch.rand(2, 8, 4, 4)], ctx)
    with pytest.raises(ValueError, match="needs ctx\\['deformed'\\]"):
        dec([torch.rand(2, 8, 8, 8)], {})


# --- vox-256: parameter count, official keys --------------------------------------------------------------------
def test_vox256_spade_official_keys_convert_and_load_strictly():
    cfg = load_recipe("dagan/vox256_spade")
    with torch.device("meta"):
        model = build_model(cfg.model.to_dict(), image_size=cfg.image_size)
        disc = build("discriminator", cfg.discriminator.to_dict(), path="discriminator")
    info = _keys()["variant_networks"]["generator_SPADEDepthAwareGenerator"]
    gen = _count(model.motion) + _count(model.encoder) + _count(model.compensator) + _count(model.decoder)
    assert gen == SPADE_PARAMETERS == info["num_parameters"]
    assert _count(model.decoder) == 28_914_119 == _keys()["sub_networks"]["generator_SPADEDepthAwareGenerator.decoder"]
    assert cfg.model.decoder.type == "SPADEDecoder" and cfg.model.decoder.align_corners is False

    official = _spade_checkpoint()
    official["generator"] = {f"module.{k}": v for k, v in official["generator"].items()}  # DDP prefixes
    assert generator_variant(official["generator"]) == "SPADEDepthAwareGenerator"
    conv = get_converter("dagan")
    assert conv.detect(official)[0] == 1.0
    scores = {m: s for m, s, _ in detect_scores(official)}
    assert scores["dagan"] == 1.0 and max(s for m, s in scores.items() if m != "dagan") < 0.999
    sds = conv(official)
    assert len(official["generator"]) == info["num_state_tensors"] == 248
    n = sum(len(official[k]) for k in ("generator", "kp_detector", "discriminator", "depth_encoder", "depth_decoder"))
    assert len(sds["model"]) + len(sds["discriminator"]) == n  # every official key used once
    load_strict_on_meta(sds, model=model, discriminator=disc)  # none missing, none left over, shapes equal
    # values land where they belong: the SPADE decoder's keys map one to one
    gen_sd = official["generator"]
    pairs = {"decoder.G_middle_2.norm_1.mlp_gamma.weight": "decoder.middle.2.norm_1.mlp_gamma.weight",
             "decoder.up_1.conv_s.weight_orig": "decoder.up_blocks.1.conv_s.weight_orig",
             "decoder.up_0.conv_0.weight_u": "decoder.up_blocks.0.conv_0.weight_u",
             "decoder.compress.bias": "decoder.compress.bias", "decoder.conv_img.weight": "decoder.conv_img.weight",
             "AttnModule.gamma": "compensator.gamma"}
    for off, ours in pairs.items():
        assert sds["model"][ours] is gen_sd[f"module.{off}"], (off, ours)


def test_spade_checkpoint_keys_checked():
    conv = get_converter("dagan")
    ckpt = _spade_checkpoint(random=False)
    gen = dict(ckpt["generator"])
    del gen["decoder.up_1.conv_s.weight_u"]
    with pytest.raises(CheckpointError, match=r"missing keys.*generator\.decoder\.up_1\.conv_s\.weight_u"):
        conv({**ckpt, "generator": gen})
    gen = {k: v for k, v in ckpt["generator"].items() if not k.startswith("decoder.G_middle_1.")}
    with pytest.raises(CheckpointError, match=r"missing keys.*generator\.decoder\.G_middle_\.1\.\*"):
        conv({**ckpt, "generator": gen})
    gen = dict(ckpt["generator"], **{"final.weight": torch.zeros(3, 64, 7, 7)})  # a FOMM decoder key in SPADE's
    with pytest.raises(CheckpointError, match=r"unknown keys.*generator\.final\.weight"):
        conv({**ckpt, "generator": gen})


# --- plain vs SPADE generator: the recipe to use ------------------------------------------------------------------
def test_generator_variant_mismatch_names_the_recipe(tmp_path):
    conv = get_converter("dagan")
    spade = _spade_checkpoint(random=False)
    tiny = torch.load(FIXTURES / "tiny.pt", weights_only=True)["state_dict"]  # plain DepthAwareGenerator
    assert generator_variant(tiny["generator"]) == "DepthAwareGenerator" and conv.detect(tiny)[0] == 1.0
    assert conv.checkpoint_recipe(spade) == "dagan/vox256_spade" and conv.checkpoint_recipe(tiny) == "dagan/vox256"
    assert conv.checkpoint_settings(spade) == {"model.decoder.type": "SPADEDecoder"}
    # the converter's combine, told the recipe's generator
    with pytest.raises(CheckpointError) as e:
        conv.combine([spade], generator="DepthAwareGenerator")
    msg = str(e.value)
    assert "\n" not in msg and "SPADEDepthAwareGenerator" in msg and "use the recipe dagan/vox256_spade" in msg
    with pytest.raises(CheckpointError, match="holds DaGAN's DepthAwareGenerator.*use the recipe dagan/vox256$"):
        conv.combine([tiny], generator="SPADEDepthAwareGenerator")
    assert conv.combine([tiny], generator="DepthAwareGenerator")["generator"] is tiny["generator"]
    # creating a model: a plain checkpoint given to a SPADE recipe names the plain recipe, in one line
    import thkit

    path = tmp_path / "dagan_tiny.pth.tar"
    torch.save(tiny, path)
    with pytest.raises(CheckpointError) as e:
        thkit.create_model("dagan/small_spade", size=64, checkpoint=str(path))
    msg = str(e.value)
    assert "\n" not in msg and "an official dagan checkpoint" in msg and "use the recipe dagan/vox256" in msg
    assert "FOMMDecoder" in msg and "SPADEDecoder" in msg


def test_recipe_from_official_spade():
    keys = _keys()
    conv = get_converter("dagan")
    official = {**keys["model_params"], "cli_args": {**keys["cli_args"], "generator": "SPADEDepthAwareGenerator"}}
    recipe = conv.recipe_from_official(official, image_size=256, align_corners=False)
    plain_data = lambda d: json.loads(json.dumps(d))  # noqa: E731  (tuples as lists)
    assert plain_data(recipe["model"]) == plain_data(load_recipe("dagan/vox256_spade").model.to_dict())
    # the plain generator still maps onto dagan/vox256's FOMM decoder
    plain = conv.recipe_from_official(keys["model_params"] | {"cli_args": keys["cli_args"]})
    assert plain["model"]["decoder"]["type"] == "FOMMDecoder"


# --- small recipe: a forward at small width and one training step -----------------------------------------------
def test_small_spade_trains_one_step(tmp_path):
    from thkit.datasets.synthetic import write_synthetic_dataset
    from thkit.engine.runner import build_runner
    from thkit.engine.trainer import unwrap

    synth = dict(videos=2, frames=4, seed=0)
    root = str(tmp_path / "synth")
    write_synthetic_dataset(root, size=64, progress=False, **synth)
    opts = {"image_size": 64, "losses.perceptual.scales": [1], "train_dataloader.batch_size": 2,
            "train_dataloader.num_workers": 0, "train_dataloader.dataset.root": root,
            "train_dataloader.dataset.synth": synth, "val_dataloader.dataset.root": root,
            "val_dataloader.dataset.synth": synth, "val_dataloader.dataset.max_frames": 2,
            "train_cfg.max_iters": 1, "train_cfg.val_interval": 100, "default_hooks.logger.interval": 1,
            "default_hooks.checkpoint.interval": 100}
    runner = build_runner("dagan/small_spade", work_dir=str(tmp_path / "work"), cfg_options=opts)
    wrapped = unwrap(runner.model)
    model = wrapped.generator if hasattr(wrapped, "generator") else wrapped
    assert type(model.decoder).__name__ == "SPADEDecoder" and model.decoder.in_channels == 64
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runner.train()
    after = model.state_dict()
    changed = {k for k, v in after.items() if v.dtype.is_floating_point and not torch.equal(v, before[k])}
    assert {k.split(".")[0] for k in changed} >= {"keypoint_detector", "motion", "encoder", "compensator", "decoder"}
    for part in ("decoder.fc.", "decoder.compress.", "decoder.middle.0.norm_1.mlp_beta.", "decoder.up_blocks.1.conv_s.",
                 "decoder.conv_img."):
        assert any(k.startswith(part) for k in changed), f"{part} did not move"
    assert "decoder.middle.0.conv_0.weight_u" in changed  # the spectral norm's power iteration ran
    depth = [k for k in after if k.startswith("keypoint_detector.depth.")]
    assert depth and not any(k in changed for k in depth), "the frozen depth network changed"


def test_convert_checkpoint_of_the_other_generator_names_the_recipe(tmp_path):
    """`thkit convert --recipe` with a checkpoint of the other generator: the same one-line hint as create_model."""
    import thkit

    tiny = torch.load(FIXTURES / "tiny.pt", weights_only=True)["state_dict"]  # plain DepthAwareGenerator
    path = tmp_path / "dagan_tiny.pth.tar"
    torch.save(tiny, path)
    with pytest.raises(CheckpointError) as e:
        thkit.convert_checkpoint(str(path), tmp_path / "out", method="dagan", recipe="dagan/small_spade",
                                 recipe_options=None)
    msg = str(e.value)
    assert "\n" not in msg and "does not fit recipe dagan/small_spade" in msg and "use the recipe dagan/vox256" in msg
    assert not (tmp_path / "out").exists()

"""SMAC parts: ablation recipes (paper Tab. 2 and Tab. 4), windows, masks, fusion, taps, training outputs and
gradients, the timm encoder swap.  Small models (recipes/smac/small.py at 128 px, or less), CPU only."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

from thkit.builder import build, build_model
from thkit.compensate.smac import AppearanceCodebookCompensation, linspace_grid
from thkit.decode.vqgan import SFTFusion, VQGANDecoder
from thkit.encode.vqgan import VQGANEncoder
from thkit.errors import RecipeError
from thkit.layers import make_coordinate_grid
from thkit.layers.blocks import reference_ops
from thkit.layers.window import window_partition, window_reverse
from thkit.recipe import load_recipe

VARIANTS = ("baseline", "smc", "mmc", "mmc_sac", "full")


TWINS = ("baseline", "smc", "mmc", "mmc_sac", "full", "shared", "equal", "progressive")
SIZE = 64  # the small recipes run at 64 px here: the token grid follows (64 / 8)^2 = 64 tokens


def _model(name: str, size: int | None = SIZE, **overrides):
    """A ``recipes/smac/<name>.py`` model built for ``size`` px (its position embeddings' token grid follows;
    ``None``: the recipe's size)."""
    name = f"{name}_small" if name in TWINS else name  # the ablations' CPU-sized twins (paper scale: test_smac_recipes)
    cfg = load_recipe(f"smac/{name}", cfg_options=overrides or None, size=size)
    torch.manual_seed(0)
    return cfg, build_model(cfg.model.to_dict(), image_size=cfg.get("image_size"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(size: int, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, size, size, generator=g) * 2 - 1 for _ in range(2)]


def _has(model, word: str) -> bool:
    return any(word in n for n, _ in model.named_parameters())


# --- ablations: paper Table 2 ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def variants():
    out = {}
    src, drv = _images(SIZE)
    for name in VARIANTS:
        _, m = _model(name)
        with torch.no_grad():
            out[name] = (m.eval(), m(src, drv))
    return out


def test_baseline_has_no_codebook(variants):
    model, out = variants["baseline"]
    assert model.compensator is None
    assert not _has(model, "codebook") and not _has(model, "position_emb") and not _has(model, "transformer")
    assert "deformation_list" not in out
    # the decoder fuses the source features warped by the dense-motion flow (no refinement)
    assert len(out["warped_features"]) == 4 and len(model.decoder.fusion) == 3


def test_smc_compensates_motion_at_one_scale(variants):
    model, out = variants["smc"]
    c = model.compensator
    assert c.motion_scales == [0] and c.appearance is None and c.appearance_scales == []
    assert len(c.motion.feature_proj) == len(c.motion.context_proj) == 1
    assert c.motion.codes(0) == slice(0, c.motion.codebook.num_codes)  # one scale served: all codes
    assert len(out["deformation_list"]) == 2 and len(out["occlusion_list"]) == 1
    before, after = out["warped_features"][::-1], out["compensated_features"][::-1]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # no appearance compensation anywhere
    assert not _has(model, "appearance")


def test_mmc_compensates_motion_at_every_scale(variants):
    model, out = variants["mmc"]
    c = model.compensator
    assert c.motion_scales == [0, 1, 2, 3] and c.appearance is None
    assert len(out["deformation_list"]) == 5
    assert not torch.equal(out["deformation_list"][1], out["deformation_list"][4])  # every step refines


def test_mmc_sac_compensates_appearance_at_one_scale(variants):
    model, out = variants["mmc_sac"]
    c = model.compensator
    assert c.motion_scales == [0, 1, 2, 3] and c.appearance_scales == [0]
    assert len(c.appearance.embed) == 1 and c.appearance.embed[0].patch == 1
    assert c.appearance.codes(0) == slice(0, c.appearance.codebook.num_codes)
    before, after = out["warped_features"][::-1], out["compensated_features"][::-1]
    assert not torch.equal(before[0], after[0])
    assert all(torch.equal(a, b) for a, b in zip(before[1:], after[1:]))


def test_full_compensates_both_at_every_scale(variants):
    model, out = variants["full"]
    c = model.compensator
    assert c.motion_scales == c.appearance_scales == [0, 1, 2, 3]
    assert [e.patch for e in c.appearance.embed] == [1, 2, 4, 8]
    before, after = out["warped_features"][::-1], out["compensated_features"][::-1]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    # the compensator warps the raw features itself: the model does not pre-warp them with the unrefined flow
    calls = []
    hook = model.warper.register_forward_hook(lambda m, a, o: calls.append(tuple(a[0].shape[-2:])))
    try:
        with torch.no_grad(), reference_ops("warp_reads"):  # every warp whole (the shortcut warps some pixels only)
            model(*_images(SIZE))
    finally:
        hook.remove()
    # per scale, coarse to fine: the MCC query warp (current flow) and the final warp (refined flow)
    assert calls == [(8, 8), (8, 8), (16, 16), (16, 16), (32, 32), (32, 32), (64, 64), (64, 64)]
    counts = {n: sum(p.numel() for p in variants[n][0].parameters()) for n in VARIANTS}
    assert counts["baseline"] < counts["smc"] < counts["mmc"] < counts["mmc_sac"] < counts["full"]


# --- code allocation: paper Table 4 -------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("shared", [(0, 128)] * 4),
    ("equal", [(0, 32), (32, 64), (64, 96), (96, 128)]),
    ("progressive", [(0, 32), (0, 64), (0, 96), (0, 128)]),
])
def test_allocation_variants(name, expected):
    _, model = _model(name)
    c = model.compensator
    for part in (c.motion, c.appearance):
        assert part.codebook.num_codes == 128
        assert [(s.start, s.stop) for s in (part.codes(i) for i in range(4))] == expected
    # the training forward searches exactly those codes, and the retrieval attends to them
    model.train()
    src, drv = _images(SIZE, batch=2)
    seen = []
    hooks = [layer.cross_attn.register_forward_hook(lambda m, a, o: seen.append(a[1].shape[1]))
             for layer in c.motion.transformer.layers[:1]]
    with torch.no_grad(), reference_ops("code_cache"):  # the cached code projection bypasses cross_attn's forward
        out = model(src, drv)
    for h in hooks:
        h.remove()
    assert seen == [hi - lo for lo, hi in expected]
    for key in ("motion_vq", "appearance_vq"):
        for (lo, hi), vq in zip(expected, out[key]):
            assert vq["num_codes_searched"] == hi - lo
            assert lo <= int(vq["indices"].min()) and int(vq["indices"].max()) < hi


def test_token_grid_follows_image_size():
    cfg, model = _model("small", size=None)  # the recipe's own size; the builder hands it to the transformers
    assert cfg.image_size == 128 and "num_tokens" not in cfg.model.compensator.motion.transformer
    comp = model.compensator
    assert comp.motion.transformer.num_tokens == comp.appearance.transformer.num_tokens == (128 // 8) ** 2 == 256
    _, model = _model("small", size=64)
    assert model.compensator.appearance.transformer.position_emb.shape == (64, 64)
    src, drv = _images(128)
    with pytest.raises(ValueError, match="num_tokens=64"):
        with torch.no_grad():
            model.eval()(src, drv)


# --- building blocks -------------------------------------------------------------------------------------------
def test_window_partition_layout_and_inverse():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    t = window_partition(x, 2)
    assert t.shape == (2, 2 * 3, 2 * 2 * 3)
    # token (i, j) = window x[:, :, 2i:2i+2, 2j:2j+2] flattened as (p1, p2, c)  (b c (h p1)(w p2) -> b (h w)(p1 p2 c))
    for i in range(2):
        for j in range(3):
            ref = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].permute(0, 2, 3, 1).reshape(2, -1)
            assert torch.equal(t[:, i * 3 + j], ref)
    assert torch.equal(window_reverse(t, 2, (2, 3)), x)
    with pytest.raises(ValueError, match="cannot be cut"):
        window_partition(torch.zeros(1, 1, 5, 4), 2)


def test_linspace_grid_is_the_identity_grid():
    g = linspace_grid(64, 48)
    assert g.shape == (64, 48, 2)
    torch.testing.assert_close(g, make_coordinate_grid(64, 48), atol=1e-6, rtol=0)
    assert g[0, 0].tolist() == [-1.0, -1.0] and g[-1, -1].tolist() == [1.0, 1.0]


def test_outside_mask():
    flow = make_coordinate_grid(8, 8).unsqueeze(0).repeat(2, 1, 1, 1)
    flow[1, :4, :, 0] += 2.5  # the top half of sample 1 samples outside the source
    mask = AppearanceCodebookCompensation.outside_mask(flow, (4, 4))
    assert mask.shape == (2, 16) and not mask[0].any()
    assert mask[1].view(4, 4)[:2].all() and not mask[1].view(4, 4)[2:].any()


def test_sft_fusion_formula():
    torch.manual_seed(0)
    fuse = SFTFusion(8, norm_groups=4)
    f, x = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)
    h = fuse.encode(torch.cat([f, x], 1))
    ref = x + 0.5 * (x * fuse.scale(h) + fuse.shift(h)) + fuse.add(f)
    torch.testing.assert_close(fuse(f, x, 0.5), ref)
    with pytest.raises(ValueError, match="does not match"):
        fuse(f[:, :, :8], x)


def test_decoder_fusion_and_low_res_output():
    torch.manual_seed(0)
    dec = VQGANDecoder(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(2,), norm_groups=4,
                       low_res_output="always").eval()
    assert dec.feature_channels == [8, 16, 16]
    feats = [torch.randn(1, 8, 32, 32), torch.randn(1, 16, 16, 16), torch.randn(1, 16, 8, 8)]
    with torch.no_grad():
        out = dec(feats)
        assert out["prediction"].shape == out["prediction_lr"].shape == (1, 3, 32, 32)
        assert not torch.equal(out["prediction"], out["prediction_lr"])
        assert torch.equal(out["prediction_lr"], dec.decode(feats[-1]))
        dec.fusion_weight = 0.0  # official w = 0: no fusion at all
        out = dec(feats)
        assert torch.equal(out["prediction"], out["prediction_lr"])
    with pytest.raises(ValueError, match="fuses 2 features"):
        dec(feats[1:])


def test_encoder_named_taps():
    enc = VQGANEncoder(nf=8, ch_mult=(1, 1, 1, 2), norm_groups=4, out_indices=("L0", "L1", "L2", "L3.1", "latent"))
    assert enc.out_blocks == [2, 5, 8, 11, 18] and enc.out_channels == [8, 8, 8, 16, 16]
    assert enc.out_strides == [1, 2, 4, 8, 8]
    feats = enc(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 64, 64), (8, 32, 32), (8, 16, 16), (16, 8, 8), (16, 8, 8)]
    with pytest.raises(ValueError, match="does not exist"):
        VQGANEncoder(nf=8, ch_mult=(1, 2), attn_levels=(1,), norm_groups=4, out_indices=("L5",))
    with pytest.raises(ValueError, match="not a block index or a tap name"):
        VQGANEncoder(nf=8, ch_mult=(1, 2), attn_levels=(1,), norm_groups=4, out_indices=("top",))
    with pytest.raises(ValueError, match="attn_levels"):
        VQGANEncoder(nf=8, ch_mult=(1, 2), norm_groups=4)


def test_compensator_needs_driving_heatmaps():
    _, model = _model("small", **{"model.motion.return_driving_heatmap": False})
    model.eval()
    src, drv = _images(SIZE)
    with pytest.raises(ValueError, match="return_driving_heatmap=True"):
        with torch.no_grad():
            model(src, drv)
    with pytest.raises(RecipeError, match="appearance_scales"):
        build_model(load_recipe("smac/small", cfg_options={"model.compensator.appearance_scales": [4]}).model.to_dict())


# --- training outputs and gradients ------------------------------------------------------------------------------
def test_training_step_reaches_every_part():
    from thkit.losses.smac import CodebookLoss, FlowReconstructionLoss

    _, model = _model("small", **{"model.decoder.low_res_output": "train"})  # as smac/vox256 (smac/small: 'never')
    model.train()
    src, drv = _images(SIZE, batch=2, seed=1)
    out = model(src, drv)
    assert len(out["motion_vq"]) == len(out["appearance_vq"]) == len(out["motion_reconstructions"]) == 4
    assert out["prediction_lr"].shape == out["prediction"].shape
    cb = CodebookLoss()(out["motion_vq"], out["appearance_vq"])
    torch.testing.assert_close(cb["motion"], sum(v["loss"] for v in out["motion_vq"]))
    flow = FlowReconstructionLoss(weight=32.0)(out["motion_reconstructions"], out["deformation_list"])
    loss = ((out["prediction"] - drv).abs().mean() + 0.5 * (out["prediction_lr"] - drv).abs().mean()
            + cb["motion"] + cb["appearance"] + flow)
    loss.backward()
    c = model.compensator
    parts = {
        "keypoint_detector": model.keypoint_detector, "motion": model.motion, "encoder": model.encoder,
        "decoder": model.decoder, "motion codebook": c.motion.codebook, "motion transformer": c.motion.transformer,
        "flow decoder": c.motion.flow_decoder, "refine": c.motion.refine, "appearance codebook": c.appearance.codebook,
        "appearance transformer": c.appearance.transformer, "window embeddings": c.appearance.embed,
    }
    for name, part in parts.items():
        grads = [p.grad for p in part.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} gets no gradient"


# --- timm encoder ------------------------------------------------------------------------------------------------
def test_timm_encoder_random_and_local_weights():
    import timm

    enc = build("encoder", dict(type="TimmEncoder", model_name="test_efficientnet", out_indices=(0, 1, 2)))
    assert enc.out_channels == [16, 24, 32] and enc.out_strides == [2, 4, 8] and not enc.normalize
    feats = enc(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 24, 16, 16), (2, 32, 8, 8)]
    ref = timm.create_model("test_efficientnet", pretrained=False)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "weights.pth")
        torch.save(ref.state_dict(), path)
        loaded = build("encoder", dict(type="TimmEncoder", model_name="test_efficientnet", out_indices=(0, 1, 2),
                                       pretrained_path=path, input_range=(-1, 1)))
    sd, rsd = loaded.model.state_dict(), ref.state_dict()
    assert len(sd) > 10 and all(torch.equal(v, rsd[k]) for k, v in sd.items())
    assert loaded.normalize  # pretrained weights expect timm's normalisation of [0, 1] images
    with pytest.raises(FileNotFoundError, match="is not a file"):
        build("encoder", dict(type="TimmEncoder", model_name="test_efficientnet", pretrained_path="/nonexistent.pth"))
    with pytest.raises(RecipeError, match="unknown timm model"):
        build("encoder", dict(type="TimmEncoder", model_name="resnet_does_not_exist"))


def test_recipe_swaps_in_a_timm_encoder():
    """The baseline recipe with a timm backbone: features at strides 2/4/8 fused into a matching decoder."""
    cfg = load_recipe("smac/baseline_small")
    m = cfg.model.to_dict()
    m["encoder"] = dict(type="TimmEncoder", model_name="test_efficientnet", out_indices=(0, 1, 2),
                        input_range=(-1, 1))
    m["decoder"] = dict(type="VQGANDecoder", nf=8, ch_mult=(1, 2, 3, 4), norm_groups=8, fuse_levels=(1, 2))
    torch.manual_seed(0)
    model = build_model(m).train()
    src, drv = _images(64, batch=2)
    out = model(src, drv)
    assert out["prediction"].shape == (2, 3, 64, 64)
    out["prediction"].abs().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())

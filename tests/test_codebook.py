"""VectorQuantizer (official numerics, straight-through, code subsets, usage stats) and code allocations."""
import pytest
import torch

from thkit.builder import build
from thkit.codebook.allocation import EqualAllocation, ProgressiveAllocation, SharedAllocation
from thkit.codebook.vq import VectorQuantizer
from thkit.errors import RecipeError
from thkit.interfaces import check_output, check_part


def official_formula(z, weight, beta, num=None):
    """The official SMAC/CodeFormer quantiser written out plainly (one-hot matmul, prefix of ``num`` codes)."""
    e = weight if num is None else weight[:num]
    zl = z.permute(0, 2, 3, 1).contiguous()
    flat = zl.view(-1, zl.shape[-1])
    d = (flat ** 2).sum(dim=1, keepdim=True) + (e ** 2).sum(1) - 2 * torch.matmul(flat, e.t())
    idx = torch.argmin(d, dim=1).unsqueeze(1)
    onehot = torch.zeros(idx.shape[0], e.shape[0]).to(z)
    onehot.scatter_(1, idx, 1)
    zq = torch.matmul(onehot, e).view(zl.shape)
    loss = beta * torch.mean((zq.detach() - zl) ** 2) + torch.mean((zq - zl.detach()) ** 2)
    zq = zl + (zq - zl).detach()
    e_mean = torch.mean(onehot, dim=0)
    perplexity = torch.exp(-torch.sum(e_mean * torch.log(e_mean + 1e-10)))
    return zq.permute(0, 3, 1, 2).contiguous(), loss, perplexity, torch.mean(d), idx


def _vq(num_codes=64, dim=8, seed=0, spread=1.0, **kw):
    torch.manual_seed(seed)
    vq = VectorQuantizer(num_codes, dim, **kw)
    with torch.no_grad():  # spread the codes so that many are used
        vq.embedding.weight.normal_(0, spread)
    return vq


@pytest.mark.parametrize("num", [None, 16, 32, 48, 64])
@pytest.mark.parametrize("shape", [(2, 8, 32, 32), (3, 8, 5, 7)])
def test_matches_official_formula(num, shape):
    vq = _vq()
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    out = vq(z, codes=num)
    zq, loss, ppl, mean_d, idx = official_formula(z, vq.weight, 0.25, num)
    assert torch.equal(out["indices"].reshape(-1, 1), idx)  # discrete: exact; prefix => full == local
    assert torch.equal(out["quantized"], zq)
    assert torch.equal(out["loss"], loss)
    assert torch.equal(out["perplexity"], ppl)
    assert torch.equal(out["mean_distance"], mean_d)
    assert out["num_codes_searched"] == (num or 64)
    assert out["indices"].shape == (shape[0],) + shape[2:]
    # loss = beta * commitment + 1 * codebook, and both terms have the same value in the forward pass
    torch.testing.assert_close(out["codebook_loss"], out["commitment_loss"])
    torch.testing.assert_close(out["loss"], 1.25 * out["codebook_loss"])


def test_gradients_match_official_straight_through():
    vq = _vq(beta=0.25)
    z = torch.randn(2, 8, 6, 6, requires_grad=True)
    g = torch.randn(2, 8, 6, 6)
    out = vq(z, codes=40)
    (out["loss"] + (out["quantized"] * g).sum()).backward()
    gz, gw = z.grad.clone(), vq.weight.grad.clone()
    z.grad = None
    vq.weight.grad = None
    zq, loss, *_ = official_formula(z, vq.weight, 0.25, 40)
    (loss + (zq * g).sum()).backward()
    torch.testing.assert_close(gz, z.grad)
    torch.testing.assert_close(gw, vq.weight.grad)
    assert vq.weight.grad[40:].abs().sum() == 0  # codes outside the searched prefix get no gradient
    # straight-through: d quantized / d z is the identity
    z2 = torch.randn(1, 8, 3, 3, requires_grad=True)
    (vq(z2)["quantized"] * g[:1, :, :3, :3]).sum().backward()
    torch.testing.assert_close(z2.grad, g[:1, :, :3, :3])


def test_weights_from_recipe():
    vq = _vq(beta=0.5, codebook_weight=2.0)
    z = torch.randn(2, 8, 4, 4)
    out = vq(z)
    torch.testing.assert_close(out["loss"], 0.5 * out["commitment_loss"] + 2.0 * out["codebook_loss"])


def test_index_sets_and_ranges_index_the_full_codebook():
    vq = _vq()
    z = torch.randn(2, 8, 9, 9)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    allowed = torch.tensor([3, 60, 17, 5, 42, 33, 8])
    out = vq(z, codes=allowed)
    brute = allowed[torch.cdist(flat, vq.weight[allowed]).argmin(1)]
    assert torch.equal(out["indices"].reshape(-1), brute)
    assert torch.equal(allowed[out["local_indices"].reshape(-1)], out["indices"].reshape(-1))
    torch.testing.assert_close(out["quantized"], vq.lookup(out["indices"]))
    # a range (the 'equal' allocation's group 2 of 4): indices stay in [32, 48)
    sl = EqualAllocation().codes(2, 4, 64)
    out = vq(z, codes=sl)
    assert out["indices"].min() >= 32 and out["indices"].max() < 48 and out["num_codes_searched"] == 16
    ref = 32 + torch.cdist(flat, vq.weight[32:48]).argmin(1)
    assert torch.equal(out["indices"].reshape(-1), ref)
    assert torch.equal(vq(z, codes=(32, 48))["indices"], out["indices"])
    assert torch.equal(vq(z, codes=EqualAllocation().indices(2, 4, 64))["indices"], out["indices"])


def test_bad_code_selections_are_named():
    vq = _vq()
    with pytest.raises(ValueError, match=r"prefix must be in \[1, 64\]"):
        vq(torch.randn(1, 8, 2, 2), codes=65)
    with pytest.raises(ValueError, match=r"indices must be in \[0, 63\], got range \[0, 64\]"):
        vq(torch.randn(1, 8, 2, 2), codes=torch.tensor([0, 64]))
    with pytest.raises(ValueError, match=r"expects z as \(B, 8, \*spatial\)"):
        vq(torch.randn(1, 4, 2, 2))
    with pytest.raises(TypeError):
        vq(torch.randn(1, 8, 2, 2), codes="all")


def test_usage_statistics_and_dead_codes():
    vq = _vq(num_codes=16, dim=4, usage_decay=0.5, dead_threshold=0.5)
    z = vq.weight.detach()[:4].T.reshape(1, 4, 2, 2).repeat(2, 1, 1, 1)  # exactly codes 0..3, twice each
    vq.eval()
    vq(z)
    assert vq.usage_calls == 0 and vq.usage_ema.sum() == 0  # eval does not count
    vq.train()
    for _ in range(3):
        out = vq(z, codes=8)
    assert torch.equal(out["indices"].reshape(-1).sort().values, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    torch.testing.assert_close(vq.usage_ema[:4], torch.full((4,), 2 * (1 - 0.5 ** 3)))
    assert vq.usage_ema[4:].sum() == 0
    assert torch.equal(vq.dead_codes(8), torch.arange(4, 8))
    stats = vq.usage_stats(8)
    assert stats["dead_codes"] == 4 and stats["active_codes"] == 4 and stats["dead_fraction"] == 0.5
    assert stats["usage_perplexity"] == pytest.approx(4.0, rel=1e-5) and stats["usage_calls"] == 3
    # codes outside the searched set are not decayed by calls that did not search them
    vq(torch.randn(2, 4, 2, 2), codes=torch.tensor([12, 13]))
    torch.testing.assert_close(vq.usage_ema[:4], torch.full((4,), 2 * (1 - 0.5 ** 3)))
    assert vq.usage_ema[12:14].sum() > 0
    # batch perplexity: 4 codes used equally -> 4
    assert out["perplexity"].item() == pytest.approx(4.0, rel=1e-5)
    vq.reset_usage()
    assert vq.usage_stats()["dead_codes"] == 16


def test_state_dict_is_official_layout_and_builds_from_recipe():
    vq = build("codebook", dict(type="VectorQuantizer", num_codes=1024, dim=32, beta=0.25), path="model.codebook")
    check_part("codebook", vq)
    assert list(vq.state_dict()) == ["embedding.weight"]  # usage buffers are not saved: official keys only
    assert vq.weight.shape == (1024, 32)
    assert vq.weight.abs().max() <= 1 / 1024  # official U(-1/N, 1/N) init
    check_output("codebook", vq(torch.randn(1, 32, 4, 4)))
    with pytest.raises(RecipeError, match="model.codebook.beat"):
        build("codebook", dict(type="VectorQuantizer", num_codes=8, dim=4, beat=0.25), path="model.codebook")


def test_official_fixture_app_quantiser_at_sampled_positions(fixtures_dir):
    """Official SMAC fixture: the appearance VQ inputs are stored sub-sampled (every 8th token); the codes
    chosen there and the straight-through output must match the official indices and quant_app exactly."""
    fx = torch.load(fixtures_dir / "smac" / "tiny.pt", weights_only=True)
    weight = fx["state_dict"]["net_g"]["quantize_app.embedding.weight"]
    vq = VectorQuantizer(*weight.shape, beta=0.25)
    vq.load_state_dict({"embedding.weight": weight})
    alloc = ProgressiveAllocation()  # official default, groups = number of scales = 4
    app_calls = [c for c in fx["outputs"]["vq_calls"] if c["quantizer"] == "quantize_app"]
    entries = fx["outputs"]["net_g_train"]["app_recon_list"]
    assert len(app_calls) == len(entries) == 4
    for scale, (call, entry) in enumerate(zip(app_calls, entries)):
        quant_app, app_feat = entry[2], entry[3]
        s = app_feat["stride"]
        assert app_feat["spatial_dims"] == [-2, -1] and quant_app["stride"] == s
        codes = alloc.codes(scale, 4, weight.shape[0])
        assert codes.stop == call["num_codes_searched"]
        out = vq(app_feat["sub"], codes=codes)
        official = call["indices"].view(2, 32, 32)[:, ::s, ::s]
        assert torch.equal(out["indices"], official), scale
        torch.testing.assert_close(out["quantized"], quant_app["sub"], atol=1e-6, rtol=0)


# --- code allocations -----------------------------------------------------------------------------------
def test_official_smac_tables():
    # 1024 codes, 4 scales (32/64/128/256 px), groups = 4
    assert ProgressiveAllocation().table(4, 1024) == [(0, 256), (0, 512), (0, 768), (0, 1024)]
    assert EqualAllocation().table(4, 1024) == [(0, 256), (256, 512), (512, 768), (768, 1024)]
    assert SharedAllocation().table(4, 1024) == [(0, 1024)] * 4
    # the tiny fixture: 16 codes, 4 scales
    assert [ProgressiveAllocation().bounds(s, 4, 16)[1] for s in range(4)] == [4, 8, 12, 16]


@pytest.mark.parametrize("num_codes,num_scales", [(12, 3), (8, 2), (6, 1), (10, 5)])
def test_exact_indices_each_scale_sees(num_codes, num_scales):
    g = num_codes // num_scales
    for s in range(num_scales):
        assert torch.equal(SharedAllocation().indices(s, num_scales, num_codes), torch.arange(num_codes))
        assert torch.equal(EqualAllocation().indices(s, num_scales, num_codes), torch.arange(s * g, (s + 1) * g))
        prog = ProgressiveAllocation().indices(s, num_scales, num_codes)
        assert prog.dtype == torch.long and torch.equal(prog, torch.arange((s + 1) * g))
    # the finest progressive scale sees everything; equal groups are disjoint and cover the codebook
    assert ProgressiveAllocation().indices(num_scales - 1, num_scales, num_codes).numel() == num_codes
    eq = torch.cat([EqualAllocation().indices(s, num_scales, num_codes) for s in range(num_scales)])
    assert torch.equal(eq, torch.arange(num_codes))


def test_num_groups_setting():
    assert ProgressiveAllocation(num_groups=2).table(4, 8) == [(0, 4), (0, 8), (0, 8), (0, 8)]
    assert ProgressiveAllocation(num_groups=8).table(2, 16) == [(0, 2), (0, 4)]
    assert EqualAllocation(num_groups=6).table(3, 12) == [(0, 2), (2, 4), (4, 6)]
    with pytest.raises(ValueError, match="scale 2 needs group 2, but there are only num_groups=2"):
        EqualAllocation(num_groups=2).indices(2, 4, 8)
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        ProgressiveAllocation(num_groups=0)


def test_sizes_that_do_not_divide_name_the_numbers():
    with pytest.raises(ValueError, match=r"num_codes=1000 cannot be split into num_groups=3 equal groups"):
        ProgressiveAllocation().indices(0, 3, 1000)
    with pytest.raises(ValueError, match=r"num_codes=10 cannot be split into num_groups=4"):
        EqualAllocation(num_groups=4).indices(1, 2, 10)
    assert SharedAllocation().table(3, 1000) == [(0, 1000)] * 3  # sharing needs no split


def test_scale_is_zero_based_and_checked():
    with pytest.raises(ValueError, match=r"0-based index, coarse to fine, in \[0, 3\] for num_scales=4; got 4"):
        ProgressiveAllocation().indices(4, 4, 1024)
    with pytest.raises(ValueError, match="got -1"):
        SharedAllocation().indices(-1, 4, 1024)


def test_allocations_build_from_recipe():
    for name, cls in [("shared", SharedAllocation), ("equal", EqualAllocation), ("progressive", ProgressiveAllocation)]:
        a = build("allocation", dict(type=name, num_groups=4), path="model.compensator.allocation")
        assert isinstance(a, cls) and a.num_groups == 4
        check_part("allocation", a)
    with pytest.raises(RecipeError, match="did you mean 'progressive'"):
        build("allocation", dict(type="progresive"), path="model.compensator.allocation")

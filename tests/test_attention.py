"""Attention backends, the front door, default selection, and the nn.MultiheadAttention drop-in."""
import math
import sys
import types

import pytest
import torch
from torch import nn

import thkit.attention as A
from thkit.attention.backends import XFormersAttention
from thkit.builder import build
from thkit.interfaces import check_part
from thkit.layers.attention import BackendMultiheadAttention

B, M, H, D = 2, 12, 4, 8


def _reference(q, k, v, keep=None, add=None, scale=None):
    """softmax(q k^T * scale + mask) v, head by head, in float64 (independent of thkit)."""
    q, k, v = q.double(), k.double(), v.double()
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = torch.einsum("bmhd,bnhd->bhmn", q, k) * scale
    if add is not None:
        logits = logits + add.double()
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    return torch.einsum("bhmn,bnhd->bmhd", torch.softmax(logits, -1), v).float()


def _qkv(n_keys, seed=0, dv=D):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, M, H, D, generator=g), torch.randn(B, n_keys, H, D, generator=g),
            torch.randn(B, n_keys, H, dv, generator=g))


def _masks(n_keys, seed=1):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(B, H, M, n_keys, generator=g) > 0.3
    keep[..., 0] = True  # every row sees at least one key
    additive = torch.randn(B, 1, M, n_keys, generator=g)
    pad = torch.rand(B, n_keys, generator=g) < 0.3
    pad[:, 0] = False
    return keep, additive, pad


@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive", "bool2d", "bool3d", "key_padding", "both"])
def test_sdpa_equals_math_equals_reference(kind, mask_kind):
    n = M if kind == "self" else 20
    q, k, v = _qkv(n, dv=6 if kind == "cross" else D)
    if kind == "self":
        k = q.clone()
    keep, additive, pad = _masks(n)
    kwargs, ref_keep, ref_add = {}, None, None
    if mask_kind == "bool":
        kwargs["mask"], ref_keep = keep, keep
    elif mask_kind == "bool2d":
        kwargs["mask"], ref_keep = keep[0, 0], keep[0, 0]
    elif mask_kind == "bool3d":
        kwargs["mask"], ref_keep = keep[:, 0], keep[:, 0].unsqueeze(1)
    elif mask_kind == "additive":
        kwargs["mask"], ref_add = additive, additive
    elif mask_kind == "key_padding":
        kwargs["key_padding_mask"], ref_keep = pad, ~pad[:, None, None, :]
    elif mask_kind == "both":
        kwargs.update(mask=additive, key_padding_mask=pad)
        ref_add, ref_keep = additive, ~pad[:, None, None, :]
    ref = _reference(q, k, v, keep=ref_keep, add=ref_add)
    out_math = A.attention(q, k, v, backend="math", **kwargs)
    out_sdpa = A.attention(q, k, v, backend="sdpa", **kwargs)
    assert out_math.shape == out_sdpa.shape == (B, M, H, v.shape[-1])
    torch.testing.assert_close(out_math, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_sdpa, out_math, atol=1e-5, rtol=1e-5)


def test_explicit_scale_and_gradients_match():
    q, k, v = (t.requires_grad_() for t in _qkv(9))
    grads = []
    for name in ("math", "sdpa"):
        out = A.attention(q, k, v, scale=0.37, backend=name)
        torch.testing.assert_close(out, _reference(q.detach(), k.detach(), v.detach(), scale=0.37),
                                   atol=1e-5, rtol=1e-5)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    for gm, gs in zip(*grads):
        torch.testing.assert_close(gm, gs, atol=1e-5, rtol=1e-4)


def test_key_padding_true_means_ignore():
    q, k, v = _qkv(10)
    pad = torch.zeros(B, 10, dtype=torch.bool)
    pad[:, 3:6] = True
    v2 = v.clone()
    v2[:, 3:6] = 100.0  # values of padded keys must not matter
    k2 = k.clone()
    k2[:, 3:6] = -50.0
    for name in ("math", "sdpa"):
        a = A.attention(q, k, v, key_padding_mask=pad, backend=name)
        b = A.attention(q, k2, v2, key_padding_mask=pad, backend=name)
        torch.testing.assert_close(a, b)
        c = A.attention(q[:, :, :, :], k[:, [0, 1, 2, 6, 7, 8, 9]], v[:, [0, 1, 2, 6, 7, 8, 9]], backend=name)
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["math", "sdpa"])
def test_fully_masked_rows_give_zeros_not_nan(name):
    q, k, v = (t.requires_grad_() for t in _qkv(7))
    pad = torch.zeros(B, 7, dtype=torch.bool)
    pad[1] = True  # batch element 1 sees no key at all
    out = A.attention(q, k, v, key_padding_mask=pad, backend=name)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert out[0].abs().sum() > 0
    add = torch.zeros(B, 1, M, 7)
    add[0, :, 2] = float("-inf")  # one query row of sample 0 sees nothing
    out2 = A.attention(q, k, v, mask=add, backend=name)
    assert torch.equal(out2[0, 2], torch.zeros_like(out2[0, 2])) and torch.isfinite(out2).all()
    g = torch.autograd.grad(out.sum() + out2.sum(), (q, k, v))
    assert all(torch.isfinite(t).all() for t in g)


def test_bad_mask_shapes_are_named():
    q, k, v = _qkv(5)
    with pytest.raises(ValueError, match=r"does not broadcast.*\(B, H, M, N\)"):
        A.attention(q, k, v, mask=torch.ones(B, H, M, 6, dtype=torch.bool), backend="math")
    with pytest.raises(ValueError, match="key_padding_mask covers 4 keys but there are 5"):
        A.attention(q, k, v, key_padding_mask=torch.zeros(B, 4, dtype=torch.bool), backend="sdpa")
    with pytest.raises(TypeError, match="bool .*floating"):
        A.attention(q, k, v, mask=torch.ones(M, 5, dtype=torch.long), backend="sdpa")
    with pytest.raises(ValueError, match="head counts differ"):
        A.attention(q, k[:, :, :2], v[:, :, :2], backend="math")


def test_unknown_backend_lists_closest_names():
    q, k, v = _qkv(5)
    with pytest.raises(A.UnknownBackendError) as e:
        A.attention(q, k, v, backend="sdap")
    msg = str(e.value)
    assert "'sdap'" in msg and "did you mean 'sdpa'" in msg and "registered: auto, math, sdpa, xformers" in msg
    with pytest.raises(ValueError):  # also a ValueError, so the builder attributes it to the recipe path
        A.set_default_backend("xformer")


def test_xformers_reports_unavailable_here_without_crashing():
    xf = A.get_backend("xformers")
    assert xf.available() is False  # no CUDA on the test machine
    assert "CUDA" in xf.reason()
    q, k, v = _qkv(5)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        xf(q, k, v)
    with pytest.raises(A.BackendUnavailableError, match="'xformers' is unavailable"):
        A.attention(q, k, v, backend="xformers")
    assert "unavailable" in A.describe_backends()["xformers"]


def test_xformers_probe_never_trusts_import(monkeypatch):
    """xformers that imports but cannot run (wrong torch build / no kernels) is reported unavailable."""
    fake = types.ModuleType("xformers")
    fake.__version__ = "0.0.fake"
    ops = types.ModuleType("xformers.ops")

    def broken(*a, **kw):
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    ops.memory_efficient_attention = broken
    fake.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", fake)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    XFormersAttention.reset_probe()
    try:
        xf = XFormersAttention()
        assert xf.available() is False
        assert "test call failed" in xf.reason()
        assert A.get_backend("auto").choose() == "sdpa"
    finally:
        XFormersAttention.reset_probe()
    monkeypatch.undo()
    assert XFormersAttention().available() is False and "CUDA" in XFormersAttention().reason()


def test_auto_picks_sdpa_on_cpu_and_says_so():
    q, k, v = _qkv(5)
    assert A.resolve_backend("auto") == "sdpa"
    assert A.resolve_backend("auto", q) == "sdpa"
    assert "'sdpa'" in A.get_backend("auto").reason()
    torch.testing.assert_close(A.attention(q, k, v, backend="auto"), A.attention(q, k, v, backend="sdpa"))


def test_default_backend_precedence(monkeypatch):
    calls = []
    math_cls = type(A.get_backend("math"))
    orig = math_cls.__call__
    monkeypatch.setattr(math_cls, "__call__", lambda self, *a, **kw: calls.append(1) or orig(self, *a, **kw))
    q, k, v = _qkv(5)
    monkeypatch.delenv(A.ENV_VAR, raising=False)
    assert A.default_backend_name() == "auto"
    monkeypatch.setenv(A.ENV_VAR, "math")
    assert A.default_backend_name() == "math" and A.resolve_backend() == "math"
    A.attention(q, k, v)
    assert len(calls) == 1
    monkeypatch.setenv(A.ENV_VAR, "mathh")
    with pytest.raises(A.UnknownBackendError, match="THKIT_ATTENTION.*did you mean 'math'"):
        A.attention(q, k, v)
    monkeypatch.setenv(A.ENV_VAR, "math")
    try:
        A.set_default_backend("sdpa")  # beats the env var
        assert A.default_backend_name() == "sdpa"
        with A.use_backend("math"):  # beats the global default
            assert A.default_backend_name() == "math"
            with A.use_backend("auto"):
                assert A.resolve_backend() == "sdpa"
            A.attention(q, k, v)
            A.attention(q, k, v, backend="sdpa")  # an explicit argument beats everything
        assert A.default_backend_name() == "sdpa"
    finally:
        A.set_default_backend(None)
    assert len(calls) == 2
    assert A.default_backend_name() == "math"


def test_backends_satisfy_interface_and_build_from_recipe():
    for name in A.registered_backends():
        b = build("attention", dict(type=name), path="model.attention")
        check_part("attention", b)
        assert b.available() in (True, False)


# --- the nn.MultiheadAttention drop-in -----------------------------------------------------------------
def _pair(E=32, heads=8, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(E, heads)
    torch.manual_seed(seed)
    ours = BackendMultiheadAttention(E, heads)
    return ref, ours


def test_mha_same_parameters_and_init():
    ref, ours = _pair()
    assert list(ref.state_dict()) == list(ours.state_dict())
    for (kr, a), (ko, b) in zip(ref.state_dict().items(), ours.state_dict().items()):
        assert a.shape == b.shape and torch.equal(a, b), kr


@pytest.mark.parametrize("backend", ["math", "sdpa", None])
def test_mha_matches_torch_with_key_padding_mask(backend):
    ref, _ = _pair(seed=3)
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    ours = BackendMultiheadAttention(32, 8, backend=backend)
    ours.load_state_dict(ref.state_dict(), strict=True)  # official weights load 1:1
    g = torch.Generator().manual_seed(0)
    L, Bt = 16, 3
    x = torch.randn(L, Bt, 32, generator=g)
    pos = torch.randn(L, 1, 32, generator=g)
    codes = torch.randn(10, 32, generator=g)
    pad = torch.rand(Bt, L, generator=g) < 0.4
    pad[:, 0] = False
    # SMAC's self-attention: q = k = x + pos (two equal tensors), v = x, with a key-padding mask
    r = ref(x + pos, x + pos, value=x, key_padding_mask=pad)[0]
    o = ours(x + pos, x + pos, value=x, key_padding_mask=pad)[0]
    torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)
    # the same with q is k (shared projection)
    qk = x + pos
    torch.testing.assert_close(ours(qk, qk, x, key_padding_mask=pad)[0], r, atol=1e-5, rtol=1e-5)
    # SMAC's cross-attention: k = v = codes repeated over the batch; ours also takes the un-repeated codes
    ctx = codes[:, None].repeat(1, Bt, 1)
    r = ref(x, ctx, value=ctx)[0]
    torch.testing.assert_close(ours(x, ctx, ctx)[0], r, atol=1e-5, rtol=1e-5)
    c1 = codes[:, None]
    torch.testing.assert_close(ours(x, c1, c1)[0], r, atol=1e-5, rtol=1e-5)
    # self-attention with one tensor, attn_mask (True = forbidden, torch's convention) and weights
    am = torch.rand(L, L, generator=g) < 0.3
    am.fill_diagonal_(False)
    r, rw = ref(x, x, x, attn_mask=am, key_padding_mask=pad)
    o, ow = ours(x, x, x, attn_mask=am, key_padding_mask=pad, need_weights=True)
    torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ow, rw, atol=1e-6, rtol=1e-5)
    assert ours(x, x, x)[1] is None


def test_mha_gradients_match_torch():
    ref, _ = _pair(seed=5)
    ours = BackendMultiheadAttention.from_torch(ref, backend="sdpa")
    x = torch.randn(9, 2, 32)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 5:] = True
    ref(x, x, x, key_padding_mask=pad)[0].square().sum().backward()
    ours(x, x, x, key_padding_mask=pad)[0].square().sum().backward()
    for (n, p), (_, p2) in zip(ref.named_parameters(), ours.named_parameters()):
        torch.testing.assert_close(p2.grad, p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_mha_batch_first_and_errors():
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    ours = BackendMultiheadAttention.from_torch(ref)
    assert ours.batch_first
    x = torch.randn(2, 7, 16)
    ref.train()  # keep torch off its inference fast path (which treats masks differently)
    torch.testing.assert_close(ours(x, x, x)[0], ref(x, x, x)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not divisible by num_heads=5"):
        BackendMultiheadAttention(16, 5)
    with pytest.raises(A.UnknownBackendError):
        BackendMultiheadAttention(16, 4, backend="flash")
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(2, 6\) should be \(B, S\) = \(2, 7\)"):
        ours(x, x, x, key_padding_mask=torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="query must be"):
        ours(torch.randn(2, 7, 8), x, x)

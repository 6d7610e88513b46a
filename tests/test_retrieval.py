"""The codebook retrieval transformer of SMAC's MCC / ACC."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thkit.attention import UnknownBackendError, use_backend
from thkit.codebook.allocation import ProgressiveAllocation
from thkit.codebook.vq import VectorQuantizer
from thkit.compensate.retrieval import RetrievalTransformer, RetrievalTransformerLayer


class ReferenceLayer(nn.Module):
    """SMAC's layer written with torch's own nn.MultiheadAttention in the official (L, B, E) layout."""

    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.cross_attn = nn.MultiheadAttention(dim, heads)
        self.conv1 = nn.Conv2d(dim, ffn, 3, padding=1)
        self.conv2 = nn.Conv2d(ffn, dim, 3, padding=1)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, tgt, context, b, h, w, pos, pad=None):  # tgt (L, B, E), context (K, B, E), pos (L, B, E)
        t = self.norm1(tgt)
        tgt = tgt + self.self_attn(t + pos, t + pos, value=t, key_padding_mask=pad)[0]
        t = self.norm2(tgt)
        tgt = tgt + self.cross_attn(t + pos, context, value=context)[0]
        t = self.norm3(tgt).permute(1, 2, 0).reshape(b, -1, h, w)
        t = self.conv2(F.gelu(self.conv1(t))).reshape(b, -1, h * w).permute(2, 0, 1)
        return tgt + t


def _inputs(B=2, E=32, h=8, w=8, K=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, h * w, E, generator=g)
    codes = torch.randn(K, E, generator=g)
    pos = 0.5 * torch.randn(h * w, E, generator=g)
    pad = torch.rand(B, h * w, generator=g) < 0.3
    return x, codes, pos, pad


def test_parameter_names_and_shapes_are_official(fixtures_dir):
    keys = json.loads((fixtures_dir / "smac" / "vox256_keys.json").read_text())["networks"]["net_g"]["keys"]
    for prefix, dim, stack_pos in (("motion_block", 32, "position_emb_motion"), ("app_block", 256, "position_emb_app")):
        stack = RetrievalTransformer(dim, num_layers=2, num_heads=8, num_tokens=1024)
        ours = {k: list(v.shape) for k, v in stack.state_dict().items()}
        official = {k.replace(f"{prefix}.", "layers.", 1): v for k, v in keys.items() if k.startswith(prefix + ".")}
        official["position_emb"] = keys[stack_pos]
        assert ours == official
        assert torch.equal(stack.position_emb, torch.zeros(1024, dim))  # zero-initialised like SMAC


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_layer_equals_reference_with_nn_multiheadattention(backend):
    B, E, h, w = 2, 32, 8, 8
    torch.manual_seed(0)
    layer = RetrievalTransformerLayer(E, num_heads=8, backend=backend)
    with torch.no_grad():  # non-trivial norms and biases
        for n, p in layer.named_parameters():
            if "norm" in n or "bias" in n:
                p.add_(0.1 * torch.randn_like(p))
    ref = ReferenceLayer(E, 8, 2 * E)
    ref.load_state_dict(layer.state_dict(), strict=True)  # the same parameter names
    x, codes, pos, pad = _inputs(B, E, h, w)
    lbe = x.transpose(0, 1)
    ctx = codes[:, None].repeat(1, B, 1)
    pos_lbe = pos[:, None].repeat(1, B, 1)
    expected = ref(lbe, ctx, B, h, w, pos_lbe, pad).transpose(0, 1)
    torch.testing.assert_close(layer(x, codes, (h, w), pos=pos, key_padding_mask=pad), expected, atol=1e-5, rtol=1e-5)
    # per-sample codes (B, K, E) give the same as shared codes
    torch.testing.assert_close(layer(x, codes.expand(B, -1, -1), (h, w), pos=pos, key_padding_mask=pad), expected,
                               atol=1e-5, rtol=1e-5)
    expected_nomask = ref(lbe, ctx, B, h, w, pos_lbe).transpose(0, 1)
    torch.testing.assert_close(layer(x, codes, (h, w), pos=pos), expected_nomask, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected, expected_nomask, atol=1e-3)  # the mask matters


def test_backends_agree_for_layer_and_stack():
    torch.manual_seed(1)
    stack = RetrievalTransformer(32, num_layers=2, num_heads=8, num_tokens=64)
    with torch.no_grad():
        stack.position_emb.normal_()
    x, codes, _, pad = _inputs(3, 32, 8, 8, K=20, seed=2)
    outs = {}
    for name in ("math", "sdpa"):
        stack.set_backend(name)
        outs[name] = stack(x, codes, (8, 8), key_padding_mask=pad)
        with use_backend(name):  # the same through the context default
            stack.set_backend(None)
            torch.testing.assert_close(stack(x, codes, (8, 8), key_padding_mask=pad), outs[name])
    torch.testing.assert_close(outs["sdpa"], outs["math"], atol=1e-5, rtol=1e-5)
    with pytest.raises(UnknownBackendError, match="did you mean 'xformers'"):
        stack.set_backend("xformer")


def test_shapes_map_and_tokens():
    stack = RetrievalTransformer(16, num_layers=2, num_heads=4, num_tokens=6 * 5)
    fmap = torch.randn(2, 16, 6, 5)
    codes = torch.randn(7, 16)
    out = stack(fmap, codes)
    assert out.shape == fmap.shape
    tokens = fmap.flatten(2).transpose(1, 2)
    out_t = stack(tokens, codes, size=(6, 5))
    assert out_t.shape == (2, 30, 16)
    torch.testing.assert_close(out_t.transpose(1, 2).reshape(2, 16, 6, 5), out)
    # without a learned position embedding any grid size works
    free = RetrievalTransformer(16, num_layers=1, num_heads=4, position_embedding=False)
    assert free.position_emb is None and free(torch.randn(1, 16, 3, 9), codes).shape == (1, 16, 3, 9)


def test_key_padding_mask_only_in_first_layer_by_default():
    torch.manual_seed(3)
    first = RetrievalTransformer(32, num_layers=2, num_heads=8, num_tokens=64, backend="sdpa")
    every = RetrievalTransformer(32, num_layers=2, num_heads=8, num_tokens=64, backend="sdpa", masked_layers="all")
    every.load_state_dict(first.state_dict())
    x, codes, _, pad = _inputs(2, 32, 8, 8)
    assert first.masked_layers == (0,)
    manual = first.layers[0](x, codes, (8, 8), pos=first.position_emb, key_padding_mask=pad)
    manual = first.layers[1](manual, codes, (8, 8), pos=first.position_emb)
    torch.testing.assert_close(first(x, codes, (8, 8), key_padding_mask=pad), manual)
    assert not torch.allclose(every(x, codes, (8, 8), key_padding_mask=pad), manual, atol=1e-4)


def test_gradient_reaches_codes_queries_and_position_embedding():
    torch.manual_seed(4)
    vq = VectorQuantizer(64, 32)
    stack = RetrievalTransformer(32, num_layers=2, num_heads=8, num_tokens=64)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    codes = vq.codes(ProgressiveAllocation().codes(1, 4, 64))  # scale 1 of 4: the first 32 codes
    assert codes.shape == (32, 32)
    stack(x, codes).square().mean().backward()
    gw = vq.weight.grad
    assert gw[:32].abs().sum(dim=1).gt(0).all()  # every retrievable code gets a gradient
    assert gw[32:].abs().sum() == 0  # codes outside the allocation do not
    assert x.grad.abs().sum() > 0 and stack.position_emb.grad.abs().sum() > 0


def test_errors_name_the_problem():
    stack = RetrievalTransformer(16, num_layers=2, num_heads=4, num_tokens=64)
    codes = torch.randn(5, 16)
    with pytest.raises(ValueError, match=r"num_tokens=64 tokens but the input has 30 \(6x5\)"):
        stack(torch.randn(1, 16, 6, 5), codes)
    with pytest.raises(ValueError, match="need size"):
        stack(torch.randn(1, 64, 16), codes)
    with pytest.raises(ValueError, match=r"size \(8, 7\) has 56 positions but there are 64 tokens"):
        stack.layers[0](torch.randn(1, 64, 16), codes, (8, 7))
    with pytest.raises(ValueError, match=r"codes must be \(K, 16\)"):
        stack(torch.randn(1, 16, 8, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"masked_layers \[2\] out of range for num_layers=2"):
        RetrievalTransformer(16, num_layers=2, num_heads=4, masked_layers=(2,))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, L\) = \(1, 64\)"):
        stack(torch.randn(1, 16, 8, 8), codes, key_padding_mask=torch.zeros(1, 63, dtype=torch.bool))

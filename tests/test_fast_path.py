"""The exact fast path (issue #17.2): inference shortcuts that change no value, BatchNorm folding within 1e-4 of
the reference, the streaming path bit-identical to the per-frame path at batch 1, attention masks without
data-dependent branches (one graph under torch.compile)."""
from __future__ import annotations

import copy

import pytest
import torch

import thkit
from thkit.attention._masks import zero_dead_rows
from thkit.attention.backends import MathAttention
from thkit.compensate.retrieval import RetrievalTransformer
from thkit.errors import ThkitError
from thkit.inference.animate import motion_settings
from thkit.inference.stream import PerFrameAnimator, StreamingAnimator
from thkit.layers.blocks import (
    DownBlock2d,
    ResBlock2d,
    SameBlock2d,
    UpBlock2d,
    fold_batchnorm,
    reference_ops,
)
from thkit.layers.vqgan import VQResBlock
from thkit.value_range import from_unit


def _randomise(module: torch.nn.Module, seed: int = 0, weights: bool = True) -> torch.nn.Module:
    """Random parameters (unless ``weights`` is false) and BatchNorm statistics (zero-initialised biases and
    identity statistics would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters() if weights else ():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


# -- attention masks -------------------------------------------------------------------------------------------
def test_dead_rows_zeroed_without_a_branch():
    q, k, v = (torch.randn(2, 5, 2, 4) for _ in range(3))
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    keep[1, :, 3] = False  # sample 1, query 3 sees nothing
    out = zero_dead_rows(torch.ones(2, 5, 2, 4), keep)
    assert out[1, 3].eq(0).all() and out.sum() == 2 * 5 * 2 * 4 - 2 * 4
    probs = MathAttention().probabilities(q, k, keep)
    assert probs[1, :, 3].eq(0).all() and torch.allclose(probs.sum(-1)[0], torch.ones(2, 5))
    # nothing dead: the fill leaves the values exactly as they are
    x = torch.randn(2, 5, 2, 4)
    assert torch.equal(zero_dead_rows(x, torch.ones(2, 1, 5, 5, dtype=torch.bool)), x)


def test_attention_with_mask_is_one_graph():
    """The SDPA and math backends with a key-padding mask compile without a graph break (it used to break at
    ``if not bool(dead.any())``)."""
    import torch._dynamo

    from thkit.attention import attention

    q, k, v = (torch.randn(1, 6, 2, 4) for _ in range(3))
    pad = torch.zeros(1, 6, dtype=torch.bool)
    pad[0, :2] = True
    for backend in ("sdpa", "math"):
        torch._dynamo.reset()
        fn = torch.compile(lambda q, k, v, m, b=backend: attention(q, k, v, key_padding_mask=m, backend=b),
                           backend="eager", fullgraph=True)
        assert torch.allclose(fn(q, k, v, pad), attention(q, k, v, key_padding_mask=pad, backend=backend),
                              atol=1e-6)


# -- retrieval transformer: the codes' key/value projection cached ---------------------------------------------
def test_code_projection_cache_is_exact_and_invalidated():
    torch.manual_seed(0)
    t = _randomise(RetrievalTransformer(16, num_layers=2, num_heads=4, image_size=32)).eval()
    x, codes = torch.randn(2, 16, 16), torch.randn(12, 16)
    pad = torch.zeros(2, 16, dtype=torch.bool)
    pad[0, :5] = True
    ref = t(x, codes, size=(4, 4), key_padding_mask=pad)  # autograd on: the module's own path, no cache
    with torch.inference_mode():
        first = t(x, codes, size=(4, 4), key_padding_mask=pad)
        again = t(x, codes, size=(4, 4), key_padding_mask=pad)
    assert torch.equal(first, ref) and torch.equal(again, ref)
    assert all(len(layer._code_kv) == 1 for layer in t.layers)
    with torch.no_grad():  # an in-place weight update (an optimiser step, load_state_dict) invalidates the entry
        t.layers[1].cross_attn.in_proj_weight.mul_(1.5)
        changed = t(x, codes, size=(4, 4), key_padding_mask=pad)
    assert torch.equal(changed, t(x, codes, size=(4, 4), key_padding_mask=pad).detach())
    assert not torch.equal(changed, ref)
    t.double()  # new parameter tensors: the cache is dropped
    assert all(not layer._code_kv for layer in t.layers)


# -- in-place activations and residual sums -------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: VQResBlock(8, 16, norm_groups=4),
    lambda: VQResBlock(8, 8, norm_groups=4),
    lambda: SameBlock2d(8, 8),
    lambda: DownBlock2d(8, 8, norm="instance"),
    lambda: UpBlock2d(8, 8),
    lambda: ResBlock2d(8),
    lambda: ResBlock2d(8, norm="none"),
])
def test_inplace_shortcut_changes_no_value(make):
    block = _randomise(make()).eval()
    x = torch.randn(1, 8, 8, 8)
    keep = x.clone()
    ref = block(x)  # autograd on: out of place
    with torch.inference_mode():
        with reference_ops():
            plain = block(x)
        fast = block(x)
    assert torch.equal(fast, ref) and torch.equal(plain, ref)
    assert torch.equal(x, keep)  # the block input is never overwritten (norm='none' gives it back unchanged)


def test_reference_ops_names_an_unknown_shortcut():
    with pytest.raises(ValueError, match="unknown inference shortcut nope; known: inplace, code_cache, warp_reads"):
        with reference_ops("nope"):
            pass


# -- BatchNorm folding ------------------------------------------------------------------------------------------
def test_fold_batchnorm_within_reference():
    net = torch.nn.Sequential(SameBlock2d(3, 8), DownBlock2d(8, 8), ResBlock2d(8), UpBlock2d(8, 8),
                              DownBlock2d(8, 8, norm="instance"))
    net = _randomise(net).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        folded = copy.deepcopy(net)
        assert fold_batchnorm(folded) == 4  # 3 conv->BN blocks + ResBlock's norm2; InstanceNorm stays
        assert isinstance(folded[2].norm1, torch.nn.BatchNorm2d)
        assert (folded(x) - ref).abs().max() < 1e-5
    with pytest.raises(ThkitError, match="training mode; call .eval"):
        fold_batchnorm(net.train())


# -- whole models: streaming == per-frame at batch 1, fast path within 1e-4 of the reference ------------------
def _paths(recipe: str, size: int, frames: int, weights: bool):
    torch.manual_seed(0)
    model = thkit.create_model(recipe, size=size)
    _randomise(model, seed=1, weights=weights)
    mt = motion_settings(model.recipe)
    lo, hi = (float(v) for v in model.input_range)
    g = torch.Generator().manual_seed(2)
    src = from_unit(torch.rand(3, size, size, generator=g), (lo, hi))
    drv = [from_unit(torch.rand(3, size, size, generator=g), (lo, hi)) for _ in range(frames)]

    def per_frame(m, ops):
        a = PerFrameAnimator(m, **mt)
        with ops():
            a.set_source(src)
            return torch.stack([a.step(f) for f in drv])

    def stream(m):
        a = StreamingAnimator(m, batch_size=1, **mt)
        a.set_source(src)
        return torch.stack(list(a.run(drv)))

    reference = per_frame(model, reference_ops)  # every shortcut off: the official order of operations
    # the bit-exact shortcuts off (warp_reads, exact to float rounding only, stays on)
    bitwise = per_frame(model, lambda: reference_ops("inplace", "code_cache"))
    streaming = stream(model)  # source cache + the exact shortcuts
    fast = copy.deepcopy(model)
    fold_batchnorm(fast)
    return reference, bitwise, streaming, stream(fast)


# SMAC keeps its initial weights: with every weight drawn at std 0.2 its flow refinement turns float rounding of
# the keypoints into flow differences growing ~10x per scale (chaotic), which says nothing about the fast path
@pytest.mark.parametrize("recipe,size,frames,weights", [("smac/tiny_fixture", 128, 1, False),
                                                        ("fomm/tiny_fixture", 64, 2, True),
                                                        ("tpsmm/tiny_fixture", 64, 1, True)])
def test_fast_path_exact(recipe, size, frames, weights):
    reference, bitwise, streaming, fast = _paths(recipe, size, frames, weights)
    assert reference.abs().max() > 0.01  # a real image, not a constant
    # streaming at batch 1 with the shortcuts is bit-identical to the per-frame path without the bit-exact ones
    assert torch.equal(streaming, bitwise)
    # and to the official order to float rounding (SMAC's warp_reads: the same taps summed in another order)
    assert (streaming - reference).abs().max() <= 1e-5
    assert (fast - reference).abs().max() <= 1e-4  # + folded BatchNorms: within float rounding

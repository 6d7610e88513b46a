"""Window (un)embeddings (:mod:`thkit.layers.window`): the convolution forms give the linear forms' values to float
rounding, :func:`conv_windows` swaps them in place for inference, and the ONNX export writes them (``window``)."""
from __future__ import annotations

import pytest
import torch

import thkit
from thkit.errors import ThkitError
from thkit.layers.window import (
    WindowEmbedding,
    WindowEmbeddingConv,
    WindowUnembedding,
    WindowUnembeddingConv,
    conv_windows,
    window_partition,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels,dim,patch,grid", [(5, 7, 1, (3, 4)), (3, 6, 2, (2, 5)), (4, 8, 4, (3, 2))])
def test_conv_forms_equal_linear_forms(channels, dim, patch, grid):
    """Against a float64 per-window reference: the linear forms and the convolution forms, tokens in row-major
    window order, each window read in (p1, p2, c) order, and the unembedding's windows put back in place."""
    torch.manual_seed(0)
    emb, unemb = WindowEmbedding(channels, dim, patch), WindowUnembedding(channels, dim, patch)
    h, w = grid
    x = torch.randn(2, channels, h * patch, w * patch)
    t = torch.randn(2, h * w, dim)
    # reference: window (i, j) of x is x[:, :, i p:(i+1) p, j p:(j+1) p], flattened as (p1, p2, c)
    we, be = emb.proj.weight.double(), emb.proj.bias.double()
    wu, bu = unemb.proj.weight.double(), unemb.proj.bias.double()
    want_t = torch.empty(2, h * w, dim, dtype=torch.float64)
    want_x = torch.empty(2, channels, h * patch, w * patch, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            win = x[:, :, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch].double()
            want_t[:, i * w + j] = win.permute(0, 2, 3, 1).reshape(2, -1) @ we.T + be
            out = (t[:, i * w + j].double() @ wu.T + bu).reshape(2, patch, patch, channels).permute(0, 3, 1, 2)
            want_x[:, :, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch] = out
    with torch.no_grad():
        for form in (emb, WindowEmbeddingConv(emb)):
            tokens, got_grid = form(x)
            assert got_grid == grid and tokens.shape == want_t.shape
            assert float((tokens.double() - want_t).abs().max()) < 1e-5
        for form in (unemb, WindowUnembeddingConv(unemb)):
            assert float((form(t, grid).double() - want_x).abs().max()) < 1e-5
    assert torch.equal(window_partition(x, patch)[:, 0], x[:, :, :patch, :patch].permute(0, 2, 3, 1).reshape(2, -1))


def test_conv_forms_reject_bad_shapes():
    emb = WindowEmbeddingConv(WindowEmbedding(3, 4, 2))
    with pytest.raises(ValueError, match="expects 3 channels"):
        emb(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="cannot be cut into 2x2 windows"):
        emb(torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match="do not form a 2x2 grid"):
        WindowUnembeddingConv(WindowUnembedding(3, 4, 2))(torch.zeros(1, 3, 4), (2, 2))


def test_conv_windows_swaps_in_place_for_inference():
    """Every window (un)embedding of a SMAC model (ModuleList entries included) is swapped; the model's output stays
    to float rounding; a model in training mode is refused."""
    torch.manual_seed(0)
    model = thkit.create_model("smac/tiny_fixture")
    n = sum(isinstance(m, (WindowEmbedding, WindowUnembedding)) for m in model.modules())
    assert n > 0
    src, drv = torch.rand(1, 3, 256, 256) * 2 - 1, torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        want = model(src, drv)["prediction"]
        model.train()
        with pytest.raises(ThkitError, match="training mode"):
            conv_windows(model)
        model.eval()
        assert conv_windows(model) == n
        assert not any(isinstance(m, (WindowEmbedding, WindowUnembedding)) for m in model.modules())
        got = model(src, drv)["prediction"]
    assert float((got - want).abs().max()) < 1e-5


def test_export_writes_window_convolutions():
    """The default export swaps a copy (the model keeps its linear forms) and reproduces torch to 1e-4; without the
    rewrite the window transposes are exported as they are."""
    import onnx

    from thkit.export import OnnxModel, compare_with_torch, onnx_graphs

    torch.manual_seed(0)
    model = thkit.create_model("smac/tiny_fixture")

    def ops(rewrites):
        graphs, spec = onnx_graphs(model, rewrites=rewrites)
        nodes = onnx.load_from_string(graphs["frame"]).graph.node
        return graphs, spec, sum(n.op_type == "DepthToSpace" for n in nodes)

    graphs, spec, shuffles = ops(("window",))
    assert shuffles > 0 and spec["rewrites"] == ["window"]
    assert any(isinstance(m, WindowEmbedding) for m in model.modules())
    assert ops(())[2] == 0
    assert compare_with_torch(model, OnnxModel(graphs, spec), frames=2) < 1e-4

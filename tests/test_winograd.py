"""Winograd F(2x2, 3x3) convolution (:mod:`thkit.layers.winograd`): a 3x3 convolution's values to float rounding,
swapped in for inference where the channels are wide enough, and written by the ONNX export (``winograd``)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import thkit
from thkit.errors import ThkitError
from thkit.layers.winograd import WinogradConv2d, can_winograd, winograd_convs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape,out", [((2, 5, 32, 34), 7), ((1, 6, 33, 31), 4), ((1, 3, 8, 8), 2)])
def test_winograd_equals_convolution(shape, out):
    """Against a float64 direct convolution: batches, even and odd sizes (padded and cropped), and an 8x8 input (too
    few tiles: the direct convolution)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(shape[1], out, 3, padding=1)
    x = torch.randn(*shape)
    with torch.no_grad():
        want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        got = WinogradConv2d(conv)(x)
    assert got.shape == want.shape
    assert float((got.double() - want).abs().max()) < 1e-5 * float(want.abs().max())
    tiles = (shape[2] + 1) // 2 * ((shape[3] + 1) // 2)
    assert torch.equal(got, conv(x)) == (tiles < 256)  # only the small input runs the convolution itself


def test_only_plain_3x3_convolutions_wide_enough():
    assert can_winograd(torch.nn.Conv2d(4, 4, 3, padding=1))
    assert not can_winograd(torch.nn.Conv2d(4, 4, 3, padding=1), min_channels=8)
    for conv in (torch.nn.Conv2d(4, 4, 3, padding=1, stride=2), torch.nn.Conv2d(4, 4, 1),
                 torch.nn.Conv2d(4, 4, 3, padding=1, groups=2), torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2)):
        assert not can_winograd(conv)
        with pytest.raises(ValueError, match="3x3 kernel, stride 1"):
            WinogradConv2d(conv)


def test_winograd_convs_swaps_wide_convolutions_for_inference(monkeypatch):
    """In a model, only the convolutions with enough channels are swapped; its output stays to float rounding (every
    input size computed by Winograd here: MIN_TILES lowered for the 64-px model)."""
    import thkit.layers.winograd as W

    monkeypatch.setattr(W, "MIN_TILES", 1)
    torch.manual_seed(0)
    model = thkit.create_model("tpsmm/tiny_fixture")
    widths = sorted({min(m.in_channels, m.out_channels) for m in model.modules() if can_winograd(m)})
    assert len(widths) >= 2
    cut = widths[-1]
    wide = sum(can_winograd(m, cut) for m in model.modules())
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = model(src, drv)["prediction"]
        model.train()
        with pytest.raises(ThkitError, match="training mode"):
            winograd_convs(model, cut)
        model.eval()
        assert winograd_convs(model, cut) == wide > 0
        assert sum(isinstance(m, WinogradConv2d) for m in model.modules()) == wide
        assert any(can_winograd(m) for m in model.modules())  # the narrower ones stay
        got = model(src, drv)["prediction"]
    assert float((got - want).abs().max()) < 1e-5


def test_export_writes_winograd_for_wide_convolutions(monkeypatch):
    """The export swaps a copy (MIN_CHANNELS and MIN_TILES lowered so that the tiny model has such convolutions) and
    reproduces torch to 1e-4; the default thresholds leave the tiny model's narrow convolutions alone."""
    import onnx

    import thkit.layers.winograd as W
    from thkit.export import OnnxModel, compare_with_torch, onnx_graphs

    torch.manual_seed(0)
    model = thkit.create_model("tpsmm/tiny_fixture")

    def matmuls(rewrites):
        graphs, spec = onnx_graphs(model, rewrites=rewrites)
        return graphs, spec, sum(n.op_type == "MatMul" for n in onnx.load_from_string(graphs["frame"]).graph.node)

    plain = matmuls(())[2]
    assert matmuls(("winograd",))[2] == plain  # 512 channels: none in the tiny model
    monkeypatch.setattr(W, "MIN_CHANNELS", 8)
    monkeypatch.setattr(W, "MIN_TILES", 1)
    graphs, spec, wino = matmuls(("winograd",))
    assert wino > plain and spec["rewrites"] == ["winograd"]
    assert not any(isinstance(m, W.WinogradConv2d) for m in model.modules())
    assert compare_with_torch(model, OnnxModel(graphs, spec), frames=2) < 1e-4

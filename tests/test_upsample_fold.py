"""Nearest-x2 upsampling + 3x3 convolution computed at the low resolution (:mod:`thkit.layers.upsample`): the same
values as the upsample-then-convolve blocks, 2.25x fewer multiply-adds, the ONNX export folded by default."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import thkit
from thkit.errors import ThkitError
from thkit.layers import UpBlock2d
from thkit.layers.upsample import UpsampleConv2d, fold_upsample
from thkit.layers.vqgan import VQUpsample

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 16, 8, 8), (1, 3, 1, 1)])
def test_upsample_conv_equals_upsample_then_conv(shape):
    """Every phase and every border (odd, even, one-pixel inputs): the upsampled convolution to float rounding,
    against a float64 reference; and 2.25x fewer FLOPs (4x4 instead of 4x9 multiply-adds per input pixel, the
    padded ring aside)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(shape[1], 6, 3, padding=1)
    x = torch.randn(*shape)
    with torch.no_grad():
        want = F.conv2d(F.interpolate(x.double(), scale_factor=2), conv.weight.double(), conv.bias.double(),
                        padding=1)
        got = UpsampleConv2d(conv, min_pixels=0)(x)
    assert got.shape == want.shape == (shape[0], 6, 2 * shape[2], 2 * shape[3])
    assert float((got.double() - want).abs().max()) < 1e-5 * float(want.abs().max())
    big = torch.randn(1, shape[1], 32, 32)
    with FlopCounterMode(display=False) as before:
        conv(F.interpolate(big, scale_factor=2))
    with FlopCounterMode(display=False) as after:
        UpsampleConv2d(conv)(big)
    ratio = before.get_total_flops() / after.get_total_flops()
    assert 2.0 < ratio <= 2.25  # 2.25 x (32 / 33)^2 = 2.12 for the convolutions alone


def test_upsample_conv_small_inputs_run_directly():
    """Below min_pixels (default MIN_PIXELS, 8x8) the block upsamples and convolves with the original filters: the
    same numbers bit for bit and the same FLOPs as the unfolded block; from 8x8 on it runs folded."""
    from thkit.layers.upsample import MIN_PIXELS

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1).requires_grad_(False)
    block = UpsampleConv2d(conv)
    assert block.min_pixels == MIN_PIXELS == 64
    for side, folded in ((2, False), (4, False), (7, False), (8, True)):
        x = torch.randn(1, 16, side, side)
        want = conv(F.interpolate(x, scale_factor=2))
        with FlopCounterMode(display=False) as direct:
            conv(F.interpolate(x, scale_factor=2))
        with FlopCounterMode(display=False) as counted:
            got = block(x)
        assert torch.equal(got, want) is not folded
        assert float((got - want).abs().max()) < 1e-5
        assert (counted.get_total_flops() < direct.get_total_flops()) is folded


def test_fold_upsample_blocks_and_model():
    """fold_upsample swaps UpBlock2d's and VQUpsample's convolutions (not other ones), keeps their outputs, and
    keeps a whole model's predictions to 1e-5; training mode is refused; a conv it cannot take over stays."""
    torch.manual_seed(0)
    blocks = torch.nn.Sequential(UpBlock2d(8, 4, norm="instance"), VQUpsample(4)).eval()
    x = torch.randn(1, 8, 6, 5)
    with torch.no_grad():
        want = blocks(x)
        assert fold_upsample(blocks) == 2
        got = blocks(x)
    assert isinstance(blocks[0].conv, UpsampleConv2d) and isinstance(blocks[1].conv, UpsampleConv2d)
    assert got.shape == want.shape == (1, 4, 24, 20)
    assert float((got - want).abs().max()) < 1e-5
    assert fold_upsample(blocks) == 0  # already folded

    odd = UpBlock2d(4, 4, kernel_size=5, padding=2).eval()
    assert fold_upsample(odd) == 0 and type(odd.conv) is torch.nn.Conv2d
    with pytest.raises(ThkitError, match="training mode"):
        fold_upsample(UpBlock2d(4, 4))

    model = thkit.create_model("fomm/tiny_fixture")
    folded = copy.deepcopy(model)
    assert fold_upsample(folded) > 0
    g = torch.Generator().manual_seed(1)
    src, drv = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    with torch.inference_mode():
        a, b = model(src, drv)["prediction"], folded(src, drv)["prediction"]
    assert float((a - b).abs().max()) < 1e-5


def test_export_folds_a_copy_and_reproduces_torch():
    """The ONNX export folds a copy (the model keeps its convolutions and its training mode) and the folded graphs
    reproduce the unfolded torch model to 1e-4; without the rewrite the convolutions are exported as they are."""
    from thkit.export import OnnxModel, compare_with_torch, onnx_graphs

    model = thkit.create_model("tpsmm/tiny_fixture")
    model.train()
    graphs, spec = onnx_graphs(model, image_size=64)
    assert spec["rewrites"] == ["upsample", "masked_attention", "window", "grid_sample"]
    assert model.training and not any(isinstance(m, UpsampleConv2d) for m in model.modules())
    model.eval()
    assert compare_with_torch(model, OnnxModel(graphs, spec), frames=2) < 1e-4
    assert onnx_graphs(model, image_size=64, rewrites=())[1]["rewrites"] == []


def test_export_folds_batchnorm_before_the_upsample_fold():
    """The folded up blocks interleave after their convolution, where the exporter and onnxruntime could no longer
    fuse the BatchNorm that follows: the export folds BatchNorms into their convolutions first, so the graph keeps
    only the norms that act on a block's input (which nothing can fold), as without the rewrite."""
    import onnx

    from thkit.export import onnx_graphs

    model = thkit.create_model("fomm/tiny_fixture")

    def norms(rewrites):
        graph = onnx.load_from_string(onnx_graphs(model, rewrites=rewrites)[0]["frame"]).graph
        return sum(n.op_type == "BatchNormalization" for n in graph.node)

    resblock_norms = sum(isinstance(getattr(m, "norm1", None), torch.nn.BatchNorm2d) for m in model.modules())
    assert norms(("upsample",)) == norms(()) == resblock_norms > 0

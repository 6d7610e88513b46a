"""NNPACK convolutions between onnxruntime segments (:mod:`thkit.nnpack`, ``--nnpack``): which convolutions are
cut, that the segmented graph computes what onnxruntime computes, NNPACK's rounding against float64, and the
one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import thkit
from thkit.cli import main as thkit_main
from thkit.errors import ExportError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from thkit.nnpack import NnpackSession, nnpack_available, select_convs  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not nnpack_available(), reason="this torch has no NNPACK")]


def _conv(name, x, y, cin, cout, rng, k=3, stride=1, pad=1, group=1, bias=True):
    w = numpy_helper.from_array((rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin * k * k / group))
                                .astype(np.float32), f"{name}.w")
    inits = [w]
    inputs = [x, w.name]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}.b"))
        inputs.append(inits[-1].name)
    node = helper.make_node("Conv", inputs, [y], name=name, kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pad] * 4, group=group)
    return node, inits


def _graph(channels=64, size=64, seed=0):
    """x -> A (cut) -> Relu -> B (cut, no bias) -> + x (a skip across both cuts) -> C (stride 2, not cut), with
    a shape tensor (int64) made before the cuts and used after them, and B's output (made by NNPACK) an output too;
    plus convolutions the rules leave alone: 1x1, grouped, too narrow, too small."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for args in (("A", "x", "a", channels, channels), ("B", "r", "b", channels, channels),
                 ("C", "s", "c", channels, channels), ("P", "x", "p", channels, channels),
                 ("G", "x", "gr", channels, channels), ("N", "n", "nn", 8, 8), ("S", "small", "sm", channels, 8)):
        kw = {"B": dict(bias=False), "C": dict(stride=2), "P": dict(k=1, pad=0), "G": dict(group=2)}.get(args[0], {})
        node, ini = _conv(*args, rng, **kw)
        nodes.append(node)
        inits += ini
    nodes.insert(1, helper.make_node("Relu", ["a"], ["r"], name="relu"))
    nodes.insert(3, helper.make_node("Add", ["b", "x"], ["s"], name="add"))
    nodes.insert(0, helper.make_node("Shape", ["x"], ["shape"], name="shape"))
    nodes.append(helper.make_node("Reshape", ["c", "shape_half"], ["c2"], name="reshape"))
    nodes.insert(1, helper.make_node("Div", ["shape", "two"], ["shape_half0"], name="div"))
    nodes.insert(2, helper.make_node("Mul", ["shape_half0", "keep"], ["shape_half"], name="mul"))
    inits += [numpy_helper.from_array(np.array([1, 1, 2, 2], np.int64), "two"),
              numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "keep")]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", f, [1, channels, size, size]),
         helper.make_tensor_value_info("n", f, [1, 8, size, size]),
         helper.make_tensor_value_info("small", f, [1, channels, 8, 8])],
        [helper.make_tensor_value_info(n, f, None) for n in ("c2", "b", "p", "gr", "nn", "sm")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(channels=64, size=64, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, channels, size, size)).astype(np.float32),
            "n": rng.standard_normal((1, 8, size, size)).astype(np.float32),
            "small": rng.standard_normal((1, channels, 8, 8)).astype(np.float32)}


def test_select_convs_takes_only_the_wide_3x3_stride_1_convolutions():
    model = _graph()
    assert [c.node for c in select_convs(model)] == ["A", "B"]
    chosen = {c.node: c for c in select_convs(model, min_channels=8, min_size=8)}
    assert sorted(chosen) == ["A", "B", "N", "S"]  # never the strided, 1x1 or grouped ones
    assert chosen["B"].bias is None and chosen["A"].bias == "A.b" and chosen["A"].shape == (1, 64, 64, 64)
    assert select_convs(model, min_channels=65) == [] and [c.node for c in select_convs(model, min_size=65)] == []


def test_nnpack_session_computes_what_onnxruntime_computes():
    """Every output of the segmented graph (a skip across two cuts, an int64 shape made before them and used after,
    an output NNPACK itself made) equals a plain onnxruntime session's to NNPACK's rounding, and a second run (the
    same arrays handed on) gives the same numbers."""
    model = _graph()
    feeds = _feeds()
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = plain.run(None, feeds)
    split = NnpackSession(model.SerializeToString())
    assert split.num_cut == 2 and split.num_sessions == 3
    assert [i.name for i in split.get_inputs()] == ["x", "n", "small"]
    got = split.run(None, feeds)
    assert [g.shape for g in got] == [w.shape for w in want] and got[0].shape == (1, 64, 32, 32)
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-4 * np.abs(w).max()
    again = split.run(["b", "c2"], feeds)
    assert np.array_equal(again[0], got[1]) and np.array_equal(again[1], got[0])
    # the cut convolutions really run by NNPACK: its rounding differs from onnxruntime's direct kernel
    assert np.abs(got[1] - want[1]).max() > 0
    # nodes without names (ONNX allows it) are cut by their outputs just the same
    for node in model.graph.node:
        node.name = ""
    unnamed = NnpackSession(model.SerializeToString())
    assert unnamed.num_cut == 2 and all(np.array_equal(a, b) for a, b in zip(unnamed.run(None, feeds), got))


def test_nnpack_rounding_against_float64():
    """NNPACK's Winograd rounds about 1e-5 of the output's magnitude away from the exact result (onnxruntime's
    direct kernel a few 1e-7): what the ``--nnpack`` help and the speed tables state."""
    rng = np.random.default_rng(0)
    for cin, cout, size in ((64, 64, 64), (128, 64, 32)):
        x = torch.from_numpy(rng.standard_normal((1, cin, size, size)).astype(np.float32))
        w = torch.from_numpy((rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32))
        b = torch.zeros(cout)
        exact = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1)
        scale = float(exact.abs().max())
        nnpack = float((torch._nnpack_spatial_convolution(x, w, b, [1, 1]).double() - exact).abs().max()) / scale
        direct = float((torch.nn.functional.conv2d(x, w, b, padding=1).double() - exact).abs().max()) / scale
        assert direct < 1e-6 and 1e-7 < nnpack < 5e-5


def test_onnx_model_with_nnpack_reproduces_torch():
    """SMAC's frame graph (one transformer layer, 64 px) with its 3x3 convolutions from 16 channels and 16 px cut
    reproduces torch's streaming path to 1e-4, as the plain onnxruntime graphs do."""
    from thkit.export import OnnxModel, compare_with_torch, onnx_graphs

    torch.manual_seed(0)
    model = thkit.create_model("smac/small", size=64, cfg_options={
        "model.compensator.motion.transformer.num_layers": 1,
        "model.compensator.appearance.transformer.num_layers": 1})
    graphs, spec = onnx_graphs(model)
    ort_model = OnnxModel(graphs, spec)
    ort_model.sessions["frame"] = NnpackSession(graphs["frame"], select=lambda m: select_convs(m, 16, 16))
    assert ort_model.sessions["frame"].num_cut >= 40
    assert compare_with_torch(model, ort_model, frames=2) < 1e-4
    assert OnnxModel(graphs, spec, nnpack=True).sessions["frame"].num_cut == 0  # 64 px: nothing is wide enough


def test_nnpack_through_the_api_and_its_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("THKIT_ONNX_CACHE", str(tmp_path / "onnx_cache"))
    torch.manual_seed(0)
    model = thkit.create_model("fomm/small", size=64)
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    drv = np.stack([np.roll(src, 3 * i, axis=1) for i in range(3)])
    a = thkit.animate(src, drv, model, backend="onnxruntime")
    b = thkit.animate(src, drv, model, backend="onnxruntime", nnpack=True)
    assert int(np.abs(a.astype(int) - b).max()) <= 1
    for extra in (["--backend", "torch", "--nnpack"], ["--backend", "onnxruntime", "--precision", "int8", "--nnpack"]):
        assert thkit_main(["animate", "--recipe", "fomm/small", "--random-weights", "-s", "x.png", "-d", "y.mp4",
                           *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "--nnpack" in err and "--backend onnxruntime at fp32" in err and "\n" not in err
    monkeypatch.setattr("thkit.nnpack.nnpack_available", lambda: False)
    with pytest.raises(ExportError, match="need a torch built with NNPACK"):
        NnpackSession(_graph().SerializeToString())
    assert thkit_main(["animate", "--recipe", "fomm/small", "--random-weights", "-s", "x.png", "-d", "y.mp4",
                       "--backend", "onnxruntime", "--nnpack"]) == 2
    assert "needs a torch built with NNPACK" in capsys.readouterr().err

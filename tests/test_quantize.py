"""int8 inference (thkit.quantize, ``--backend onnxruntime --precision int8``): the frame graph's convolutions are
quantized (and only they), the int8 graphs stay close to the float32 ones, the quantized export is cached, bad
combinations are one line.  (Speed and the quality cost with trained weights: benchmarks/speed.py.)"""
from __future__ import annotations

import json

import onnx
import pytest
import torch
from conftest import moving_block_frames

import thkit
from thkit.backends import backend_model
from thkit.cli import main as thkit_main
from thkit.export import ExportError, OnnxModel, check_backend, export_key
from thkit.inference.animate import motion_settings
from thkit.inference.stream import StreamingAnimator
from thkit.quantize import CALIBRATION_FRAMES, calibration_feeds

SIZE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("THKIT_ONNX_CACHE", str(tmp_path / "onnx_cache"))


def _run(m, src, frames, mt):
    anim = StreamingAnimator(m, batch_size=1, **mt)
    anim.set_source(src)
    return torch.stack(list(anim.run(frames)))


def test_int8_quantizes_the_convolutions_and_stays_close_to_float32(tmp_path):
    torch.manual_seed(0)
    model = thkit.create_model("fomm/small", size=SIZE)
    mt = motion_settings(model.recipe)
    fp32 = backend_model(model, "onnxruntime", motion=mt)
    feeds = calibration_feeds(fp32, mt)
    assert len(feeds) == CALIBRATION_FRAMES and set(feeds[0]) == set(fp32.inputs["frame"])
    int8 = backend_model(model, "onnxruntime", "int8", motion=mt)
    assert int8.startup["cache"] == "miss" and int8.spec["precision"] == "int8"
    assert "sample clip" in int8.spec["quantization"]["calibration"]
    graph = onnx.load(f"{int8.startup['folder']}/frame.onnx").graph
    ops = [n.op_type for n in graph.node]
    convs = sum(op == "Conv" for op in ops)
    assert convs > 5 and ops.count("QuantizeLinear") >= convs and ops.count("DequantizeLinear") >= 2 * convs
    src, frames = moving_block_frames(*model.input_range, 3, SIZE)
    a, b = _run(fp32, src, frames, mt), _run(int8, src, frames, mt)
    diff = (a - b).abs()
    assert 0 < float(diff.mean()) < 0.02 and float(diff.max()) < 0.25, (float(diff.mean()), float(diff.max()))
    # cached beside the float32 export under its own key; a second load is a hit
    again = backend_model(model, "onnxruntime", "int8", motion=mt)
    assert again.startup["cache"] == "hit" and again.startup["folder"] == int8.startup["folder"]
    names = sorted(p.name for p in (tmp_path / "onnx_cache").iterdir())
    assert names == sorted([export_key(model), export_key(model) + "-int8-110"])
    assert json.loads((tmp_path / "onnx_cache" / names[1] / "onnx.json").read_text())["precision"] == "int8"
    # calibrated on one's own content instead: not cached, said in the spec
    from thkit.quantize import load_int8

    own = load_int8(model, mt, content=(src[0], frames))
    assert own.startup["cache"] is None and own.spec["quantization"]["calibration"].startswith("given content")
    assert float((_run(own, src, frames, mt) - a).abs().mean()) < 0.02
    assert sorted(p.name for p in (tmp_path / "onnx_cache").iterdir()) == names


def test_int8_without_the_cache_and_the_one_line_errors(monkeypatch, capsys):
    monkeypatch.setenv("THKIT_ONNX_CACHE", "off")
    torch.manual_seed(0)
    model = thkit.create_model("fomm/tiny_fixture", size=SIZE)
    ort = backend_model(model, "onnxruntime", "int8", motion=motion_settings(model.recipe))
    assert isinstance(ort, OnnxModel) and ort.startup["cache"] is None and ort.spec["precision"] == "int8"
    with pytest.raises(ExportError, match="--precision int8 runs on --backend onnxruntime"):
        check_backend("torch", "int8")
    with pytest.raises(ExportError, match="runs the float32 or the int8 graphs: --precision bf16"):
        check_backend("onnxruntime", "bf16")
    assert thkit_main(["animate", "--recipe", "fomm/small", "--random-weights", "-s", "x.png", "-d", "y.mp4",
                       "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--precision int8 runs on --backend onnxruntime" in err and "\n" not in err


def test_cli_int8_calibrated_on_the_driving_video(tmp_path, capsys, monkeypatch):
    """``--int8-calibration driving``: the int8 graphs are calibrated on this run's source and first driving frames
    (as the animation prepares them), not on the sample clip, and nothing is cached."""
    import thkit.quantize as quantize
    from thkit.cli.app import SAMPLE_DRIVING, SAMPLE_SOURCE

    seen = []
    original = quantize.load_int8

    def spy(model, motion, cache=True, folder=None, threads=None, content=None):
        seen.append(None if content is None else (tuple(content[0].shape), len(content[1])))
        return original(model, motion, cache, folder, threads, content)

    monkeypatch.setattr(quantize, "load_int8", spy)
    out = tmp_path / "out.mp4"
    assert thkit_main(["animate", "--recipe", "fomm/tiny_fixture", "--random-weights", "--size", str(SIZE),
                       "-s", str(SAMPLE_SOURCE), "-d", str(SAMPLE_DRIVING), "--max-frames", "5", "--backend",
                       "onnxruntime", "--precision", "int8", "--int8-calibration", "driving", "-o", str(out),
                       "--no-progress"]) == 0
    assert out.is_file() and seen == [((3, SIZE, SIZE), 5)]
    assert "calibrated on the driving" in capsys.readouterr().out
    assert not (tmp_path / "onnx_cache").exists()

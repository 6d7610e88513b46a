"""ONNX export (:mod:`thkit.export`, ``thkit export``, ``--backend onnxruntime``): onnxruntime on the CPU reproduces
torch's streaming path for FOMM, TPSMM and SMAC; one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import moving_block_frames

import thkit
from thkit.cli import main as thkit_main
from thkit.export import GRAPHS, ExportError, OnnxModel, compare_with_torch, flatten, onnx_graphs, structure, unflatten

SIZE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """The export cache of ``--backend onnxruntime`` in the test's folder, never the user's."""
    monkeypatch.setenv("THKIT_ONNX_CACHE", str(tmp_path / "onnx_cache"))


def _model(recipe: str, options: dict | None = None):
    torch.manual_seed(0)
    return thkit.create_model(recipe, size=SIZE, cfg_options=options)


def _images(lo: float, hi: float, n: int, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A random source and driving frames with a bright block that moves, so the keypoints move."""
    return moving_block_frames(lo, hi, n, SIZE, seed)


# SMAC with one layer per retrieval transformer (every operator of two, and 40 % less export time)
SMAC_ONE_LAYER = {"model.compensator.motion.transformer.num_layers": 1,
                  "model.compensator.appearance.transformer.num_layers": 1}


@pytest.mark.parametrize("recipe,options", [("fomm/small", None), ("tpsmm/small", None),
                                            ("smac/small", SMAC_ONE_LAYER), ("mcnet/small", None),
                                            ("mrfa/small", None), ("dagan/small", None), ("ostnet/small", None)])
def test_onnxruntime_reproduces_torch(recipe, options):
    """The three graphs run by onnxruntime give torch's predictions (relative motion, adapt-scale, Jacobians where
    the recipe has them) to 1e-4, and the predictions follow the driving frames."""
    from thkit.inference.stream import StreamingAnimator

    model = _model(recipe, options)
    ort_model = OnnxModel.from_model(model)
    assert ort_model.inputs["source"] == ["source"] and ort_model.inputs["keypoints"] == ["image"]
    assert "cache.kp_source.value" in ort_model.spec["cache_names"]
    assert "kp.value" in ort_model.inputs["frame"]
    lo, hi = model.input_range
    src, frames = _images(lo, hi, 3)
    outs = {}
    for name, m in (("torch", model), ("onnxruntime", ort_model)):
        anim = StreamingAnimator(m, batch_size=1, relative=True, adapt_movement_scale=True)
        anim.set_source(src)
        outs[name] = torch.stack(list(anim.run(frames)))
    assert outs["onnxruntime"].shape == (3, 3, SIZE, SIZE)
    assert float((outs["onnxruntime"] - outs["torch"]).abs().max()) < 1e-4
    # the keypoints graph: torch's keypoints, which move with the driving frames
    with torch.inference_mode():
        kp = model.detect(torch.stack(frames))
    kp_ort = ort_model.detect(torch.stack(frames))
    assert set(kp_ort) == set(kp)
    assert all(float((kp_ort[k] - kp[k]).abs().max()) < 1e-5 for k in kp)
    assert float((kp["value"][2] - kp["value"][0]).abs().max()) > 1e-4  # (MRFA's random detector moves least: 3e-4)


def test_export_cli_writes_graphs_and_animate_backend(tmp_path, capsys):
    """``thkit export`` writes the graphs and checks them; a loaded export reproduces torch; ``thkit.animate`` and
    ``thkit animate`` with ``backend onnxruntime`` give torch's frames."""
    from PIL import Image

    from thkit.inference.video import VideoWriter, probe_video

    out = tmp_path / "fomm_onnx"
    assert thkit_main(["export", "fomm/small", "--size", str(SIZE), "--random-weights", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime reproduces torch: max |diff|" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{g}.onnx" for g in GRAPHS), "onnx.json"])
    spec = json.loads((out / "onnx.json").read_text())
    assert spec["image_size"] == SIZE and spec["opset"] == 17
    model = _model("fomm/small")  # the CLI seeds 0 before building, as here: the same weights
    loaded = OnnxModel.load(out)
    assert compare_with_torch(model, loaded, frames=2) < 1e-4
    with pytest.raises(ExportError, match="takes no driving image"):
        loaded.animate({}, {}, driving=torch.zeros(1, 3, SIZE, SIZE))

    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    drv = np.stack([np.roll(src, 3 * i, axis=1) for i in range(3)])
    a = thkit.animate(src, drv, model)
    b = thkit.animate(src, drv, model, backend="onnxruntime")
    assert a.shape == b.shape == (3, SIZE, SIZE, 3)
    assert int(np.abs(a.astype(int) - b).max()) <= 1  # uint8 rounding of 1e-7 differences at most

    Image.fromarray(src).save(tmp_path / "src.png")
    with VideoWriter(tmp_path / "drv.mp4", 25, SIZE, SIZE) as w:
        for f in drv:
            w.write(f)
    video = tmp_path / "out.mp4"
    assert thkit_main(["animate", "--recipe", "fomm/small", "--size", str(SIZE), "--random-weights", "--no-progress",
                       "-s", str(tmp_path / "src.png"), "-d", str(tmp_path / "drv.mp4"), "-o", str(video),
                       "--backend", "onnxruntime"]) == 0
    assert "(onnxruntime, fp32)" in capsys.readouterr().out
    assert probe_video(video).num_frames == 3


def test_export_errors(tmp_path, capsys):
    with pytest.raises(ExportError, match="has no onnx.json"):
        OnnxModel.load(tmp_path)
    with pytest.raises(ExportError, match="only a streaming model"):
        onnx_graphs(torch.nn.Conv2d(3, 3, 1), image_size=SIZE)
    with pytest.raises(ExportError, match="is a str"):
        flatten({"a": [torch.zeros(1), "x"]}, "cache")
    (tmp_path / "file").write_text("")
    assert thkit_main(["export", "fomm/small", "--size", str(SIZE), "--random-weights", "--no-check",
                       "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out") and "is a file" in err and "\n" not in err
    assert thkit_main(["animate", "--recipe", "fomm/small", "--random-weights", "-s", "x.png", "-d", "y.mp4",
                       "--backend", "onnxruntime", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "runs the float32 or the int8 graphs" in err and "\n" not in err
    # a warp-level motion edit is composed inside the torch model's animate, not in the frame graph: refused, not
    # silently dropped (checked before the graph would run: no session is needed)
    kp = {"value": torch.zeros(1, 10, 2), "edit_from": torch.zeros(1, 12, 2), "edit_to": torch.zeros(1, 12, 2)}
    with pytest.raises(ExportError, match="does not compose a warp-level motion edit"):
        OnnxModel.animate(None, {}, kp)


def test_flatten_roundtrip():
    obj = {"a": torch.zeros(1), "b": [torch.ones(2), None, {"c": torch.full((3,), 2.0)}]}
    named = flatten(obj, "cache")
    assert [n for n, _ in named] == ["cache.a", "cache.b.0", "cache.b.2.c"]
    back = unflatten(json.loads(json.dumps(structure(obj))), iter(t for _, t in named))
    assert back["b"][1] is None and torch.equal(back["b"][2]["c"], obj["b"][2]["c"])


def test_export_cache_reused_and_invalidated(tmp_path, monkeypatch):
    """The cached export is made once: a second load of the same model is a hit (same folder, no export), a changed
    weight or size is a miss in another folder; the cached graphs reproduce torch; a damaged entry is exported
    again; ``$THKIT_ONNX_CACHE=off`` exports in memory."""
    from thkit.backends import backend_model
    from thkit.export import cache_dir, export_key

    cache = tmp_path / "onnx_cache"
    model = _model("fomm/tiny_fixture")
    first = backend_model(model, "onnxruntime")
    assert first.startup["cache"] == "miss" and cache_dir() == cache
    folder = first.startup["folder"]
    assert [p.name for p in cache.iterdir()] == [export_key(model)]  # nothing else left behind
    second = backend_model(model, "onnxruntime")
    assert second.startup["cache"] == "hit" and second.startup["folder"] == folder
    assert second.startup["export_s"] < first.startup["export_s"] / 3
    assert compare_with_torch(model, second, frames=2) < 1e-4

    with torch.no_grad():
        model.decoder.final.weight[0, 0, 0, 0] += 1e-3  # one weight
    changed = backend_model(model, "onnxruntime")
    assert changed.startup["cache"] == "miss" and changed.startup["folder"] != folder
    assert compare_with_torch(model, changed, frames=2) < 1e-4
    assert export_key(model, image_size=32) != export_key(model)

    (cache / export_key(model) / "frame.onnx").unlink()  # damaged: exported again
    again = OnnxModel.cached(model)
    assert again.startup["cache"] == "miss" and compare_with_torch(model, again, frames=1) < 1e-4

    monkeypatch.setenv("THKIT_ONNX_CACHE", "off")
    assert cache_dir() is None and backend_model(model, "onnxruntime").startup["cache"] is None
    monkeypatch.delenv("THKIT_ONNX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "thkit" / "onnx"


def test_session_options_by_name():
    """onnxruntime settings by attribute (an enum by its name) or config entry; an unknown one is one line."""
    from thkit.export import session_options

    opts = session_options(1, {"graph_optimization_level": "ORT_ENABLE_BASIC", "enable_mem_pattern": False,
                               "session.set_denormal_as_zero": "1", "profile_file_prefix": "/tmp/run_a"})
    assert str(opts.graph_optimization_level).endswith("ORT_ENABLE_BASIC") and not opts.enable_mem_pattern
    assert opts.profile_file_prefix == "/tmp/run_a"  # a text setting is not read as an enum name
    assert opts.get_session_config_entry("session.set_denormal_as_zero") == "1"
    with pytest.raises(ExportError, match="unknown onnxruntime session option 'nope'"):
        session_options(1, {"nope": 1})
    with pytest.raises(ExportError, match="is not one of"):
        session_options(1, {"graph_optimization_level": "FAST"})


def test_masked_attention_rule_matches_torch():
    """Boolean-masked attention as the export writes it (an additive mask, rows that see no key zeroed on the
    output) gives torch's numbers, a row that sees no key included (0, as torch), with no NaN check over every
    probability; torch's own rule gives the same numbers."""
    import onnx
    import onnxruntime
    import torch.nn.functional as F

    from thkit.export import _export, _export_symbolics

    class Attend(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 4, generator=g)
    k, v = torch.randn(2, 3, 6, 4, generator=g), torch.randn(2, 3, 6, 4, generator=g)
    mask = torch.rand(2, 1, 5, 6, generator=g) > 0.3
    mask[0, 0, 2] = False  # query row 2 of the first item sees no key
    mask[1, 0, :, 0] = True
    want = Attend()(q, k, v, mask)
    assert float(want[0, :, 2].abs().max()) == 0.0
    feeds = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "mask": mask.numpy()}
    for rewrite in (True, False):
        with _export_symbolics(masked_attention=rewrite):
            graph = _export(Attend(), (q, k, v, mask), list(feeds), ["out"], "attention")
        ops = [n.op_type for n in onnx.load_from_string(graph).graph.node]
        assert ("IsNaN" in ops) is not rewrite
        session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, feeds)[0])
        assert float((got - want).abs().max()) < 1e-6


@pytest.mark.parametrize("mode,padding", [("bilinear", "zeros"), ("bilinear", "border"), ("nearest", "zeros"),
                                          ("bilinear", "reflection")])
def test_grid_sample_rule_matches_torch(mode, padding):
    """``grid_sample(align_corners=True)`` as the export writes it (``align_corners=0`` on a rescaled grid, for
    bilinear / nearest with zeros / border padding; torch's rule otherwise) gives torch's numbers, on a grid that
    reaches past the borders and a feature that is not square; ``align_corners=False`` is never rescaled."""
    import onnx
    import onnxruntime
    import torch.nn.functional as F

    from thkit.export import _export, _export_symbolics

    g = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 3, 7, 10, generator=g)
    grid = 2.4 * torch.rand(2, 5, 6, 2, generator=g) - 1.2
    if mode == "nearest":  # keep off the rounding ties between two pixels, where float rounding may pick either
        grid = torch.linspace(-1.1, 1.1, 30).reshape(1, 5, 6, 1).expand(2, 5, 6, 2) + 0.013
    for corners in (True, False):
        class Sample(torch.nn.Module):
            def forward(self, x, grid):
                return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=corners)

        want = Sample()(feature, grid)
        feeds = {"x": feature.numpy(), "grid": grid.numpy()}
        for rewrite in (True, False):
            with _export_symbolics(grid_sample=rewrite):
                graph = _export(Sample(), (feature, grid), list(feeds), ["out"], "grid_sample")
            sample = [n for n in onnx.load_from_string(graph).graph.node if n.op_type == "GridSample"]
            corners_attr = [a.i for a in sample[0].attribute if a.name == "align_corners"]
            rescaled = rewrite and corners and padding != "reflection"
            assert corners_attr == [int(corners and not rescaled)]
            session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, feeds)[0])
            assert float((got - want).abs().max()) < 1e-5, (corners, rewrite)


def test_export_cache_concurrent_winner_and_damaged_entry(tmp_path, monkeypatch):
    """Two runs exporting the same model at once: the second finds the first's complete export under the key when it
    renames its own, keeps it and leaves no temporary folder; a damaged entry (a folder without onnx.json) is
    replaced."""
    import shutil

    import thkit.export as export

    model = _model("fomm/tiny_fixture")
    cache = tmp_path / "c"
    target = cache / export.export_key(model)
    real = export.export_onnx

    def racing_export(m, out, *args):  # another run completes the same export first
        paths = real(m, out, *args)
        if not target.exists():
            shutil.copytree(out, target)
            (target / "winner").write_text("")
        return paths

    monkeypatch.setattr(export, "export_onnx", racing_export)
    folder, hit = export.cached_export(model, folder=cache)
    assert folder == target and not hit and (target / "winner").exists()
    assert sorted(p.name for p in cache.iterdir()) == [target.name]
    assert export.cached_export(model, folder=cache) == (target, True)

    shutil.rmtree(target)
    target.mkdir()
    (target / "frame.onnx").write_text("half")  # no onnx.json: damaged
    monkeypatch.setattr(export, "export_onnx", real)
    folder, hit = export.cached_export(model, folder=cache)
    assert not hit and (folder / "onnx.json").is_file() and (folder / "frame.onnx").stat().st_size > 4
    assert sorted(p.name for p in cache.iterdir()) == [target.name]


def test_export_cache_unwritable_is_one_line(tmp_path, monkeypatch):
    from thkit.backends import backend_model

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("THKIT_ONNX_CACHE", str(tmp_path / "file" / "cache"))  # under a file: cannot be made
    with pytest.raises(ExportError, match=r"cannot write the ONNX export cache .* \(set \$THKIT_ONNX_CACHE") as e:
        backend_model(_model("fomm/tiny_fixture"), "onnxruntime")
    assert "\n" not in str(e.value)


def test_export_forms_of_per_sample_kernels_equal_the_eager_ones():
    """MCNet's modulated and dynamic convolutions build one kernel per sample in eager mode; under ONNX export they
    are written with constant kernels (StyleGAN2's unfused modulation; all K dynamic kernels then mixed): the same
    numbers, per sample, at batch 3."""
    from thkit.layers.dynamic_conv import DynamicConv2d
    from thkit.layers.stylegan import ModulatedConv2d

    torch.manual_seed(0)
    x, style = torch.randn(3, 6, 9, 9), torch.randn(3, 5)
    for demodulate in (True, False):
        conv = ModulatedConv2d(6, 4, 3, 5, demodulate=demodulate)
        assert torch.allclose(conv._unfused(x, style), conv(x, style), atol=1e-5)
    dyn = DynamicConv2d(6, 4, 3, padding=1)
    torch.nn.init.normal_(dyn.bias)
    cond = torch.randn(3, 6, 5, 5)
    assert torch.allclose(dyn._per_kernel(dyn.attention(cond), x), dyn(cond, x), atol=1e-5)
    one = dyn._per_kernel(dyn.attention(cond[:1]), x[:1])  # batch 1: the mixed kernel itself
    assert torch.allclose(one, dyn(cond[:1], x[:1]), atol=1e-5)


def test_animator_precision_follows_the_backend():
    """The torch backend's animator autocasts in the asked precision; onnxruntime's graphs carry their own (float32 or
    int8), so its animator applies none (thkit.animate and thkit animate both ask this one function)."""
    from thkit.backends import animator_precision

    assert animator_precision("torch", "bf16") == "bf16" and animator_precision("torch", None) is None
    assert animator_precision("onnxruntime", "int8") is None and animator_precision("onnxruntime", "fp32") is None

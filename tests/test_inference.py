"""Inference: streaming == per-frame, `thkit animate` end to end (audio, side by side), one-line errors with no
partial output, `thkit eval` on a tiny generated dataset."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error

from thkit.builder import build_model
from thkit.cli import main as thkit_main
from thkit.inference.stream import MotionTransfer, StreamingAnimator, animate_per_frame
from thkit.recipe import load_recipe
from thkit.transfer import transfer_motion

SIZE = 64
# SMAC's tiny fixture recipe at 64 px (its token grids follow: 8 x 8), 4-level hourglasses
SMAC64 = {"image_size": SIZE, "model.keypoint_detector.num_blocks": 4, "model.motion.num_blocks": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(recipe: str, options: dict | None = None, dtype=torch.float32):
    cfg = load_recipe(recipe, options)
    torch.manual_seed(0)
    return build_model(cfg.model.to_dict(), image_size=cfg.get("image_size")).eval().to(dtype), cfg


def _inputs(n: int, lo: float, hi: float, dtype=torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    src = (torch.rand(3, SIZE, SIZE, generator=g) * (hi - lo) + lo).to(dtype)
    # smooth driving frames: a shifted blob over noise, so keypoints move
    frames = []
    for i in range(n):
        f = torch.rand(3, SIZE, SIZE, generator=g) * 0.3
        f[:, 10 + 3 * i:30 + 3 * i, 20:40] += 0.7
        frames.append((f.clamp(0, 1) * (hi - lo) + lo).to(dtype))
    return src, frames


def _stream_and_per_frame(recipe, options, n, batch_size, dtype=torch.float32, pass_driving=False):
    """The model, source, frames, and the streaming and per-frame outputs for ``n`` driving frames."""
    model, cfg = _model(recipe, options, dtype)
    lo, hi = model.input_range
    src, frames = _inputs(n, lo, hi, dtype)
    mt = dict(cfg.motion_transfer)
    ref = animate_per_frame(model, src, frames, pass_driving=pass_driving, **mt)
    anim = StreamingAnimator(model, batch_size=batch_size, pass_driving=pass_driving, **mt)
    anim.set_source(src)
    return model, src, frames, list(anim.run(frames)), ref


# --------------------------------------------------------------------------------------------------------
# streaming == per-frame
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe,options", [("fomm/small", None), ("tpsmm/tiny_fixture", None),
                                            ("smac/tiny_fixture", SMAC64)])
def test_streaming_batch1_equals_per_frame_forward(recipe, options):
    """float32, batch 1: the cached path does exactly the per-frame arithmetic (tolerance 1e-5)."""
    _, _, _, got, ref = _stream_and_per_frame(recipe, options, 3, batch_size=1)
    assert len(got) == len(ref) == 3
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the driving frames differ, so the outputs must too (a constant output would pass trivially)
    assert (ref[0] - ref[2]).abs().max() > 1e-4


@pytest.mark.parametrize("recipe,options,pass_driving", [("fomm/small", None, False),
                                                         ("tpsmm/tiny_fixture", None, True),
                                                         ("tpsmm/tiny_fixture", None, False),
                                                         ("smac/tiny_fixture", SMAC64, False)])
def test_streaming_batched_equals_per_frame_forward_float64(recipe, options, pass_driving):
    """Batches of 3 with the batch-1 source cache expanded.  In float64, so that the comparison tests the
    caching and batching logic and not float32 kernels, whose results depend on the batch size by ~1e-5
    (the model's own batch-3 vs batch-1 forward differs that much)."""
    # batches of 3 and 2
    _, _, _, got, ref = _stream_and_per_frame(recipe, options, 5, 3, torch.float64, pass_driving)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("recipe,options", [("fomm/small", None), ("tpsmm/tiny_fixture", None),
                                            ("smac/tiny_fixture", SMAC64)])
def test_streaming_batched_float32_within_the_kernels_batch_dependence(recipe, options):
    """float32, batches of 3: CPU convolution/matmul kernels pick batch-size-dependent algorithms, so even the
    model's plain batch-3 forward differs from its batch-1 forwards (measured: FOMM 6e-8, TPSMM and SMAC ~1.2e-5).
    The streaming path adds nothing beyond that: its difference from the per-frame path stays within a small
    multiple of the model's own (and under 1e-4).  Batch 1 is exact (above); float64 is exact at any batch."""
    model, src, frames, got, ref = _stream_and_per_frame(recipe, options, 5, batch_size=3)
    err = max((a - b).abs().max().item() for a, b in zip(got, ref))
    with torch.no_grad():
        batched = model(src[None].expand(3, -1, -1, -1), torch.stack(frames[:3]))["prediction"]
        kernels = max((batched[i] - model(src[None], frames[i][None])["prediction"][0]).abs().max().item()
                      for i in range(3))
    assert err <= 1e-4 and err <= max(1e-6, 5 * kernels), (err, kernels)


def test_default_batch_size_is_one_on_the_cpu():
    """On the CPU the default is batch 1 (faster there, and bit-identical to the per-frame path); 8 on CUDA."""
    from thkit.inference.stream import default_batch_size

    assert default_batch_size("cpu") == 1 and default_batch_size(torch.device("cuda", 0)) == 8
    model, _ = _model("fomm/small")
    assert StreamingAnimator(model).batch_size == 1
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        StreamingAnimator(model, batch_size=0)
    from thkit.inference.errors import InferenceError
    from thkit.inference.stream import resolve_batch_size

    assert resolve_batch_size(None, "cpu") == 1 and resolve_batch_size(3, "cpu") == 3
    with pytest.raises(InferenceError, match="--batch-size must be >= 1, got 0"):
        resolve_batch_size(0, "cpu")


def test_source_work_done_once_per_video(monkeypatch):
    """Encoder, source keypoints, motion source inputs and the hull areas are computed once per video."""
    import thkit.transfer

    model, cfg = _model("fomm/small")
    calls = {"encoder": 0, "prepare": 0, "hull": 0, "kp": 0}
    model.encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
    model.keypoint_detector.register_forward_hook(lambda *a: calls.__setitem__("kp", calls["kp"] + 1))
    prep = model.motion.prepare_source

    def counted(*a, **k):
        calls["prepare"] += 1
        return prep(*a, **k)

    monkeypatch.setattr(model.motion, "prepare_source", counted)
    hull = thkit.transfer.hull_area
    monkeypatch.setattr(thkit.transfer, "hull_area",
                        lambda p: (calls.__setitem__("hull", calls["hull"] + 1), hull(p))[1])
    src, frames = _inputs(5, 0.0, 1.0)
    anim = StreamingAnimator(model, batch_size=2, adapt_movement_scale=True)
    anim.set_source(src)
    shared = anim.cache["features"][0]
    out = list(anim.run(frames))
    assert len(out) == 5
    assert calls["encoder"] == 1 and calls["prepare"] == 1
    assert calls["hull"] == 2  # source and first driving frame, once
    assert calls["kp"] == 1 + 3  # source once, then one call per batch (2 + 2 + 1)
    assert anim.cache["features"][0] is shared


def test_motion_transfer_matches_transfer_motion():
    g = torch.Generator().manual_seed(0)

    def kp(b):
        return {"value": torch.rand(b, 10, 2, generator=g) * 2 - 1,
                "jacobian": torch.eye(2).expand(b, 10, 2, 2) + 0.1 * torch.randn(b, 10, 2, 2, generator=g)}

    ks, k0, kd = kp(1), kp(1), kp(4)
    for rel, jac, adapt in ((True, True, True), (True, False, False), (False, True, True)):
        mt = MotionTransfer(ks, rel, jac, adapt)
        mt.set_initial(k0)
        got = mt(kd)
        want = transfer_motion(ks, kd, k0, relative=rel, relative_jacobian=jac, adapt_movement_scale=adapt)
        for key in want:
            torch.testing.assert_close(got[key], want[key], atol=0, rtol=0)


# --------------------------------------------------------------------------------------------------------
# thkit animate
# --------------------------------------------------------------------------------------------------------
def _make_video(path: Path, n: int = 6, size=(48, 64), fps=Fraction(30000, 1001), audio: bool = True) -> Path:
    """A tiny H.264 mp4 (moving square) with an AAC sine track."""
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = size[1], size[0], "yuv420p"
        a = c.add_stream("aac", rate=16000) if audio else None
        for i in range(n):
            img = np.full((*size, 3), 40, np.uint8)
            img[8 + i:24 + i, 10 + 2 * i:30 + 2 * i] = (220, 180, 150)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            total = int(16000 * n / float(fps))
            x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / 16000)).astype(np.float32)
            fs = a.codec_context.frame_size or 1024
            for s in range(0, total, fs):
                fr = av.AudioFrame.from_ndarray(x[None, s:s + fs], format="fltp", layout="mono")
                fr.sample_rate, fr.pts = 16000, s
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(d / "source.png")
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(d / "flat.png")
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))
    (d / "notes.png").write_text("not an image")
    return {"dir": d, "source": d / "source.png", "flat": d / "flat.png", "broken": d / "broken.mp4",
            "notimage": d / "notes.png", "driving": _make_video(d / "driving.mp4"),
            "silent": _make_video(d / "silent.mp4", audio=False)}


def _animate(*extra, recipe="fomm/tiny_fixture"):
    return thkit_main(["animate", "--recipe", recipe, "--no-progress", "--device", "cpu", *map(str, extra)])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_animate_end_to_end_with_audio(media, tmp_path, capsys):
    from thkit.inference.video import probe_video

    out = tmp_path / "out.mp4"
    rc = _animate("--random-weights", "--source", media["source"], "--driving", media["driving"], "--out", out,
                  "--batch-size", "4")
    assert rc == 0, capsys.readouterr().err
    info = probe_video(out)
    src = probe_video(media["driving"])
    assert info.fps == src.fps == Fraction(30000, 1001)
    assert (info.width, info.height) == (SIZE, SIZE)
    assert info.num_frames == 6
    assert info.has_audio and info.audio_codec == "aac"
    assert "audio copied" in capsys.readouterr().out
    assert _leftovers(tmp_path) == []
    # the audio lasts as long as the video (one AAC frame of slack)
    import av

    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        dur = float(sum(p.duration or 0 for p in c.demux(a)) * a.time_base)
    assert abs(dur - 6 / float(src.fps)) < 0.07


def test_animate_side_by_side_and_absolute(media, tmp_path, capsys):
    from thkit.inference.video import iter_frames, probe_video

    out = tmp_path / "sbs.mkv"
    rc = _animate("--random-weights", "--source", media["source"], "--driving", media["silent"], "--out", out,
                  "--side-by-side", "--absolute", "--max-frames", "4")
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "absolute motion" in text and "audio none in the driving video" in text
    info = probe_video(out)
    assert (info.width, info.height) == (3 * SIZE, SIZE) and not info.has_audio
    frames = list(iter_frames(out))
    assert len(frames) == 4
    # the left third is the (resized) source image: constant over time
    assert np.abs(frames[0][:, :SIZE].astype(int) - frames[3][:, :SIZE].astype(int)).mean() < 3


@pytest.mark.parametrize("case", ["missing_source", "not_image", "missing_driving", "broken_video", "no_face",
                                  "no_weights", "bad_extension", "missing_checkpoint"])
def test_animate_bad_inputs_one_line_no_output(case, media, tmp_path, capsys):
    out = tmp_path / ("out.avi" if case == "bad_extension" else "out.mp4")
    args = {"source": media["source"], "driving": media["driving"]}
    extra = ["--random-weights"]
    needle = []
    if case == "missing_source":
        args["source"] = tmp_path / "nope.png"
        needle = ["source image", "nope.png", "does not exist"]
    elif case == "not_image":
        args["source"] = media["notimage"]
        needle = ["cannot read source image", "notes.png"]
    elif case == "missing_driving":
        args["driving"] = tmp_path / "nope.mp4"
        needle = ["driving video", "does not exist"]
    elif case == "broken_video":
        args["driving"] = media["broken"]
        needle = ["cannot decode driving video", "broken.mp4"]
    elif case == "no_face":
        args["source"] = media["flat"]
        extra.append("--crop")
        needle = ["no face found in the source image", "flat.png"]
    elif case == "no_weights":
        extra = []
        needle = ["--checkpoint", "--random-weights"]
    elif case == "bad_extension":
        needle = ["unsupported extension", ".avi"]
    elif case == "missing_checkpoint":
        extra = ["--checkpoint", tmp_path / "missing.pt"]
        needle = ["checkpoint", "missing.pt", "does not exist"]
    rc = _animate(*extra, "--source", args["source"], "--driving", args["driving"], "--out", out)
    assert rc == 2
    one_line_error(capsys, *needle)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_animate_checkpoint_of_another_recipe(media, tmp_path, capsys):
    from thkit.checkpoint import save_checkpoint

    tps, _ = _model("tpsmm/tiny_fixture")
    ckpt = save_checkpoint(tmp_path / "tps.pt", {"model": tps.state_dict()})
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    rc = _animate("--checkpoint", ckpt, "--source", media["source"], "--driving", media["driving"], "--out", out)
    assert rc == 2
    one_line_error(capsys, "tps.pt", "does not fit recipe fomm/tiny_fixture", "missing keys")
    assert out.read_bytes() == b"previous result"  # an existing output is never clobbered by a failed run
    assert _leftovers(tmp_path) == []


def test_animate_size_follows_into_the_recipe(media, tmp_path, capsys):
    """``--size`` builds the model for that size (SMAC's token grid follows the image): weights trained at 64 px
    animate with ``--size 64``; without it the error names the mismatching position embeddings."""
    from thkit.checkpoint import save_checkpoint
    from thkit.inference.video import probe_video

    smac64, _ = _model("smac/small", {"image_size": 64})
    ckpt = save_checkpoint(tmp_path / "smac64.pt", {"model": smac64.state_dict()})
    out = tmp_path / "out.mp4"
    args = ("--checkpoint", ckpt, "--source", media["source"], "--driving", media["driving"], "--out", out)
    assert _animate(*args, recipe="smac/small") == 2
    one_line_error(capsys, "smac64.pt", "position_emb (64, 16) vs (256, 16)")
    assert _animate(*args, "--size", 64, recipe="smac/small") == 0
    info = probe_video(out)
    assert (info.width, info.height) == (64, 64)


def test_animate_official_checkpoint_auto_detected(media, tmp_path, capsys):
    """An official FOMM checkpoint (the parity fixture's weights in the official file layout) is recognised and
    converted on the fly; the result is the one of the converted weights."""
    from thkit.checkpoint import load_into
    from thkit.inference.video import iter_frames

    fixture = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "official" / "fomm" / "tiny.pt"
    if not fixture.is_file():
        pytest.fail(f"official fixture missing: {fixture}")
    official = torch.load(fixture, weights_only=True)["state_dict"]
    ckpt = tmp_path / "vox-cpk.pth.tar"
    torch.save({"generator": official["generator"], "kp_detector": official["kp_detector"], "epoch": 99}, ckpt)
    out = tmp_path / "official.mp4"
    rc = _animate("--checkpoint", ckpt, "--source", media["source"], "--driving", media["driving"], "--out", out,
                  "--max-frames", "2", "--no-audio")
    assert rc == 0, capsys.readouterr().err
    model, _ = _model("fomm/tiny_fixture")
    load_into(model, ckpt)
    from thkit.inference.animate import _prepare, read_image

    src = _prepare(read_image(media["source"]), None, SIZE)
    drv = [_prepare(f, None, SIZE) for f in iter_frames(media["driving"], 2)]
    want = animate_per_frame(model, src, drv)
    got = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in iter_frames(out)]
    assert len(got) == 2
    for g, w in zip(got, want):  # H.264 (yuv420p, crf 18) is lossy: a few grey levels
        assert (g - w.clamp(0, 1)).abs().mean() < 4 / 255


def test_failure_mid_stream_leaves_no_file(media, tmp_path, monkeypatch):
    """An error after some frames were encoded: the temporary file is removed, nothing at the output path."""
    from thkit.inference.animate import animate_video

    model, _ = _model("fomm/tiny_fixture")
    real_step = StreamingAnimator.step
    seen = []

    def failing(self, driving):
        seen.append(driving.shape[0])
        if len(seen) == 2:
            raise RuntimeError("simulated failure")
        return real_step(self, driving)

    monkeypatch.setattr(StreamingAnimator, "step", failing)
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="simulated"):
        animate_video(model, str(media["source"]), media["driving"], out, image_size=SIZE, batch_size=2,
                      progress=False)
    assert seen == [2, 2]
    assert not out.exists() and _leftovers(tmp_path) == []


def test_crop_box_geometry():
    from thkit.inference.face import Box, crop_box, smoothed_box

    # centred face: side 1.8 x 40, centre moved up by 0.1 x 40
    assert crop_box(Box(80, 80, 40, 40), (200, 200)) == (64, 60, 72)
    # near the border: the square is moved inside the image; too large: shrunk to the image
    assert crop_box(Box(0, 0, 30, 30), (100, 200)) == (0, 0, 54)
    assert crop_box(Box(10, 10, 90, 90), (100, 120)) == (5, 0, 100)
    assert smoothed_box([(0, 0, 50), (10, 4, 50), (100, 100, 70)], (200, 200)) == (10, 4, 50)


# --------------------------------------------------------------------------------------------------------
# thkit eval
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 test videos of 3 identities (png folders and an mp4), 4 frames each."""
    from thkit.datasets.frames import write_frames

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for k, name in enumerate(("idA#v1#0#4", "idB#v1#0#4")):
        frames = np.zeros((4, SIZE, SIZE, 3), np.uint8)
        for i in range(4):
            frames[i] = rng.integers(0, 60, (SIZE, SIZE, 3))
            frames[i, 10 + 2 * i:40 + 2 * i, 15 + 3 * k:45 + 3 * k] = (200, 160, 130)
        write_frames(root / "test" / name, frames)
    _make_video(root / "test" / "idC#v1#0#4.mp4", n=4, size=(SIZE, SIZE), fps=Fraction(25), audio=False)
    return root


def test_eval_reconstruction_pure_math(dataset, tmp_path, capsys, monkeypatch):
    from thkit.datasets.frames import FramesDataset

    monkeypatch.delenv("THKIT_WEIGHTS_DIR", raising=False)
    out = tmp_path / "r.json"
    rc = thkit_main(["eval", "fomm/tiny_fixture", "--random-weights", "--data", str(dataset), "--metrics", "L1",
                     "PSNR", "SSIM", "--out", str(out), "--no-progress", "--device", "cpu", "--batch-size", "3"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "L1" in text and "PSNR" in text and "SSIM" in text and str(out) in text
    rep = json.loads(out.read_text())
    meta = rep["meta"]
    assert meta["protocol"] == "reconstruction" and meta["items"] == 3 and meta["frames"] == 12
    assert meta["motion_transfer"]["relative"] is False
    assert set(rep["metrics"]) == {"L1", "PSNR", "SSIM"}
    # the same numbers from the plain per-frame path (source = frame 0, absolute keypoints, driving given)
    model, _ = _model("fomm/tiny_fixture")
    ds = FramesDataset(dataset, mode="reconstruction", image_size=SIZE)
    l1 = []
    for _, video in ds.videos():
        preds = animate_per_frame(model, video[0], list(video), relative=False, pass_driving=True)
        l1 += [float((p.clamp(0, 1) - t).abs().mean()) for p, t in zip(preds, video)]
    assert rep["metrics"]["L1"]["frames"] == 12
    assert rep["metrics"]["L1"]["value"] == pytest.approx(np.mean(l1), abs=1e-5)
    assert 0 < rep["metrics"]["SSIM"]["value"] < 1


def test_eval_default_metrics_note_missing_weights(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("THKIT_WEIGHTS_DIR", raising=False)
    out = tmp_path / "d.json"
    rc = thkit_main(["eval", "fomm/tiny_fixture", "--random-weights", "--data", str(dataset), "--out", str(out),
                     "--no-progress", "--max-frames", "2", "--num-videos", "1"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert {"L1", "PSNR", "SSIM"} <= set(rep["metrics"])
    assert "LPIPS" not in rep["metrics"]
    lpips = [n for n in rep["meta"]["notes"] if n.startswith("LPIPS")]
    assert lpips and "vgg16-397923af.pth" in lpips[0] and "not found" in lpips[0]
    assert "note: LPIPS: not computed" in text


def test_eval_explicit_metric_without_weights_is_an_error(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("THKIT_WEIGHTS_DIR", raising=False)
    out = tmp_path / "e.json"
    rc = thkit_main(["eval", "fomm/tiny_fixture", "--random-weights", "--data", str(dataset), "--metrics", "L1",
                     "LPIPS", "--out", str(out), "--no-progress"])
    assert rc == 2
    one_line_error(capsys, "LPIPS", "vgg16-397923af.pth")
    assert not out.exists()


def test_eval_cross_id(dataset, tmp_path, capsys):
    from thkit.inference.evaluate import sample_pairs

    names = ["idA#v1", "idA#v2", "idB#v1", "idC#v1"]
    pairs = sample_pairs(names, 50, seed=0)
    assert pairs == sample_pairs(names, 50, seed=0) and len(pairs) == 10  # 12 ordered pairs minus 2 same-id
    assert all(names[i].split("#")[0] != names[j].split("#")[0] for i, j in pairs)
    assert len(sample_pairs(names, 3, seed=1)) == 3

    # a ground-truth metric does not apply to cross-id
    rc = thkit_main(["eval", "fomm/tiny_fixture", "--random-weights", "--data", str(dataset), "--protocol", "cross-id",
                     "--metrics", "L1", "--out", str(tmp_path / "x.json"), "--no-progress"])
    assert rc == 2
    one_line_error(capsys, "L1", "cross-id")

    # pairs from a CSV (video names, a file name, a frame inside a folder); unknown rows are counted
    csv = tmp_path / "pairs.csv"
    csv.write_text("source,driving\nidA#v1#0#4,idB#v1#0#4\n/x/test/idB#v1#0#4/0000002.png,idC#v1#0#4.mp4\n"
                   "unknown,idA#v1#0#4\n")
    from thkit.inference.evaluate import read_pairs

    got, skipped = read_pairs(csv, ["idA#v1#0#4", "idB#v1#0#4", "idC#v1#0#4"])
    assert got == [(0, 0, 1), (1, 2, 2)] and skipped == 1

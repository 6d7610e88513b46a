"""Evaluation protocols as named presets (`thkit eval --protocol fomm|smac|cross-id|reconstruction`,
`--list-protocols`): each preset's data flow against a plain per-frame computation on a tiny synthetic dataset,
what each metric is compared with, the pairs-list format, and one-line errors for bad protocols and pairs lists."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image

from thkit.builder import build_model
from thkit.cli import main as thkit_main
from thkit.inference.errors import InferenceError, InputFileError
from thkit.inference.evaluate import build_metrics, evaluate, read_frame_pairs, read_pairs
from thkit.inference.protocols import PROTOCOLS, EvalProtocol, get_protocol, register_protocol
from thkit.recipe import load_recipe

SIZE = 64
RECIPE = "fomm/tiny_fixture"
pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    cfg = load_recipe(RECIPE)
    torch.manual_seed(0)  # the weights `thkit eval --random-weights` builds
    return build_model(cfg.model.to_dict(), image_size=cfg.get("image_size")).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """thkit's synthetic heads: 2 test videos (2 identities) of 3 frames at 64 px, png folders."""
    from thkit.datasets.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("protocols") / "synth"
    write_synthetic_dataset(root, videos=4, frames=3, size=SIZE, test_fraction=0.5, progress=False)
    names = sorted(p.name for p in (root / "test").iterdir())
    assert len(names) == 2 and names[0].split("#")[0] != names[1].split("#")[0]
    return root, names


def _frame(root, video, index):
    from thkit.datasets.frames import open_video, to_tensor

    return to_tensor(open_video(root / "test" / video).read([index]), (SIZE, SIZE), (0.0, 1.0))


class Recorder:
    """A metric stand-in that keeps what the evaluation compares: (prediction, driving, source, video)."""

    def __init__(self):
        self.calls = []

    def update(self, pred, target=None, *, source=None, video=None):
        self.calls.append((pred.clone(), target.clone(), source.clone(), video))

    def compute(self):
        return {"value": len(self.calls)}


# --------------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------------
def test_presets_are_defined_and_listed(capsys):
    assert {"fomm", "smac", "cross-id", "reconstruction"} <= set(PROTOCOLS)
    fomm, smac, cross = PROTOCOLS["fomm"], PROTOCOLS["smac"], PROTOCOLS["cross-id"]
    # FOMM reconstruction.py: frame 0 animates its own video with absolute keypoints; L1 + pose-evaluation's AKD/AED
    assert fomm.task == "video-reconstruction" and not fomm.motion["relative"] and fomm.ground_truth
    assert fomm.metrics == ("L1", "AKD", "AED") and fomm.metric_options["AKD"]["quantize"] == "floor"
    # SMAC's test: a required pairs list of frames, absolute keypoints, FID against the source frames
    assert smac.task == "frame-pairs" and smac.pairs == "required" and not smac.motion["relative"]
    assert smac.fid_reference == "source" and smac.metric_options["LPIPS"]["net"] == "vgg"
    assert set(smac.metrics) == {"L1", "PSNR", "LPIPS", "FID", "AKD", "AED"}
    # FOMM animate: the recipe's motion transfer, 50 pairs; FID against the source (MCC)
    assert cross.motion is None and cross.num_pairs == 50 and cross.fid_reference == "source"
    assert fomm.fid_reference == "target" and PROTOCOLS["reconstruction"].metrics is None

    rc = thkit_main(["eval", "--list-protocols"])
    assert rc == 0
    out = capsys.readouterr().out
    for name in ("fomm", "smac", "cross-id", "reconstruction"):
        assert f"\n{name}: " in "\n" + out
    assert "FID reference: the source frames" in out and "not paper-exact: " in out
    assert "motion: absolute" in out and "pairs: --pairs CSV (required)" in out

    with pytest.raises(InferenceError, match="known protocols: cross-id, fomm, reconstruction, smac"):
        get_protocol("vox")
    with pytest.raises(ValueError, match="already registered"):
        register_protocol(fomm)
    with pytest.raises(ValueError, match="needs pairs='required'"):
        EvalProtocol(name="x", title="x", task="frame-pairs", source="", driving="", motion=None, pass_driving=False,
                     ground_truth=True, metrics=None)


def test_protocol_options_reach_the_metrics(monkeypatch):
    monkeypatch.delenv("THKIT_WEIGHTS_DIR", raising=False)
    metrics, _ = build_metrics(["L1", "PSNR"], "smac")
    assert metrics["L1"].quantize == "round" and metrics["PSNR"].quantize == "round"  # SMAC scores 8-bit PNGs
    metrics, _ = build_metrics(["L1:quantize=None"], "smac")  # the user's option wins
    assert metrics["L1"].quantize is None
    metrics, _ = build_metrics(["L1"], "fomm")
    assert metrics["L1"].quantize is None  # FOMM's printed L1 is on the float frames
    metrics, notes = build_metrics(None, "fomm")
    assert list(metrics) == ["L1"]  # the preset's metrics only; AKD and AED have no weights here
    assert [n.split(":")[0] for n in notes] == ["AKD", "AED"] and all("not computed" in n for n in notes)
    with pytest.raises(InferenceError, match="does not apply to the cross-id protocol"):
        build_metrics(["PSNR"], "cross-id")


# --------------------------------------------------------------------------------------------------------
# the data flows
# --------------------------------------------------------------------------------------------------------
def test_fomm_preset_is_fomm_reconstruction(data, tmp_path, capsys, monkeypatch):
    from thkit.inference.stream import animate_per_frame

    root, names = data
    monkeypatch.delenv("THKIT_WEIGHTS_DIR", raising=False)
    out = tmp_path / "fomm.json"
    rc = thkit_main(["eval", RECIPE, "--random-weights", "--data", str(root), "--protocol", "fomm", "--out", str(out),
                     "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    meta = rep["meta"]
    assert meta["protocol"] == "fomm" and meta["items"] == 2 and meta["frames"] == 6
    assert meta["motion_transfer"] == {"relative": False, "relative_jacobian": False, "adapt_movement_scale": False}
    assert meta["protocol_definition"]["metrics"] == ["L1", "AKD", "AED"]
    assert "evaluated at 64 px; the fomm protocol is defined at 256 px" in meta["not_paper_exact"]
    # the preset's metrics: L1 runs, AKD and AED (no weights here) are notes naming the missing files
    assert set(rep["metrics"]) == {"L1"}
    assert {n.split(":")[0] for n in meta["notes"]} == {"AKD", "AED"} and "note: AKD: not computed" in text
    assert "note: evaluated at 64 px; the fomm protocol is defined at 256 px" in text
    # FOMM reconstruction.py: kp_source of frame 0, generator(frame 0, kp_driving of frame t) for every t
    model = _model()
    l1 = []
    for v in names:
        video = [_frame(root, v, i)[0] for i in range(3)]
        preds = animate_per_frame(model, video[0], video, relative=False, pass_driving=True)
        l1 += [float((p.clamp(0, 1) - t).abs().mean()) for p, t in zip(preds, video)]
    assert rep["metrics"]["L1"]["frames"] == 6
    assert rep["metrics"]["L1"]["value"] == pytest.approx(np.mean(l1), abs=1e-5)


def _official_csv(path, rows, header="source,driving,frame"):
    """A pairs list in DaGAN/MCNet's format (absolute paths of another machine, an empty frame column)."""
    lines = [header] + [f"/data/someone/vox1_frames/test/{s},/data/someone/vox1_frames/test/{d}," for s, d in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_smac_preset_pairs_frames_with_absolute_motion(data, tmp_path, capsys):
    from thkit.metrics.base import PerFrameMetric  # noqa: F401 - the metrics package is registered
    from thkit.registry import METRICS

    root, (a, b) = data
    rows = [(f"{a}/0000000.png", f"{a}/0000002.png"),   # same video (vox_evaluation.csv)
            (f"{a}/0000000.png", f"{b}/0000001.png"),   # same source again: cached, another identity drives
            (f"{b}/0000002.png", f"{a}/0000001.png")]
    csv = _official_csv(tmp_path / "pairs.csv", rows)
    model = _model()
    rec = Recorder()
    l1 = METRICS.build(dict(type="L1", **PROTOCOLS["smac"].metric_options["L1"]))
    summary = evaluate(model, root, "smac", {"rec": rec, "L1": l1}, SIZE, pairs=csv, batch_size=1, progress=False,
                       save_videos=tmp_path / "out")
    assert summary["items"] == 3 and summary["frames"] == 3
    saved = sorted((tmp_path / "out").iterdir())  # one PNG per row, named by its CSV line
    assert [f.name[:10] for f in saved] == ["line000002", "line000003", "line000004"]
    assert summary["motion_transfer"]["relative"] is False
    # what is compared with what: the row's driving frame is the target, the row's source frame the source
    # (FID's reference set under smac), one generated frame per row
    want = []
    for (s, d), (pred, target, source, video) in zip(rows, rec.calls):
        sv, sf = s.split("/")
        dv, df = d.split("/")
        src, drv = _frame(root, sv, int(sf[:-4])), _frame(root, dv, int(df[:-4]))
        assert torch.equal(target, drv) and torch.equal(source, src) and video is None
        with torch.inference_mode():  # SMAC's test(): the full forward with the driving frame, absolute keypoints
            p = model(src, driving=drv, kp_driving=model.detect(drv))["prediction"].clamp(0, 1)
        assert torch.allclose(pred, p, atol=1e-5)
        png = np.asarray(Image.open(saved[len(want)]))  # the generated frame, 8-bit
        assert np.array_equal(png, (pred[0] * 255).round().byte().permute(1, 2, 0).numpy())
        q = lambda x: torch.round(x * 255) / 255  # noqa: E731 - tensor2img's 8-bit rounding
        want.append(float((q(p) - q(drv)).abs().mean()))
    assert l1.compute()["value"] == pytest.approx(np.mean(want), abs=1e-6)
    assert l1.compute()["frames"] == 3

    # the command: every row by default, --num-pairs keeps the first rows, JSON names the FID reference
    out = tmp_path / "smac.json"
    rc = thkit_main(["eval", RECIPE, "--random-weights", "--data", str(root), "--protocol", "smac", "--pairs", str(csv),
                     "--metrics", "L1", "PSNR", "--out", str(out), "--no-progress", "--num-pairs", "2"])
    assert rc == 0, capsys.readouterr().err
    assert "2 pairs" in capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert rep["meta"]["items"] == 2 and rep["meta"]["protocol_definition"]["fid_reference"] == "source"
    assert rep["metrics"]["L1"]["quantize"] == "round"
    assert rep["metrics"]["L1"]["value"] == pytest.approx(np.mean(want[:2]), abs=1e-5)


def test_cross_id_preset_csv_rows_and_source_frame(data, tmp_path):
    root, (a, b) = data
    csv = tmp_path / "p.csv"
    csv.write_text(f"distance,source,driving,frame\n1.0,{a}.mp4,{b}.mp4,0\n2.0,unknown.mp4,{a}.mp4,0\n"
                   f"3.0,{b}/0000002.png,{a}.mp4,0\n")
    rec = Recorder()
    summary = evaluate(_model(), root, "cross-id", {"rec": rec}, SIZE, pairs=csv, num_pairs=1, batch_size=3,
                       progress=False)
    # FOMM's PairedDataset: the first num_pairs rows whose videos are in the dataset; the driving video whole
    assert summary["items"] == 1 and summary["frames"] == 3 and summary["motion_transfer"]["relative"] is True
    pred, target, source, video = rec.calls[0]
    assert torch.equal(source, _frame(root, a, 0)) and video == f"{a}->{b}"
    assert torch.equal(target, torch.cat([_frame(root, b, i) for i in range(3)]))
    vids = [root / "test" / a, root / "test" / b]
    with pytest.raises(InferenceError, match="--num-pairs must be >= 1, got 0"):
        evaluate(_model(), root, "cross-id", {"rec": Recorder()}, SIZE, pairs=csv, num_pairs=0, progress=False)
    got, skipped = read_pairs(csv, [a, b], vids)
    assert got == [(0, 0, 1), (1, 2, 0)] and skipped == 1
    # DaGAN's vox_cross_id_animate.csv: `source_frame,driving_video` (an unknown header: the first two columns)
    csv.write_text(f"source_frame,driving_video\n/d/vox1_frames/test/{b}.mp4/0000001.png,/d/vox1/test/{a}.mp4\n")
    assert read_pairs(csv, [a, b], vids) == ([(1, 1, 0)], 0)
    # a source frame file that does not exist is an error naming the line, not a silently different frame
    csv.write_text(f"source,driving\n{a},{b}\n{b}/0000007.png,{a}\n")
    with pytest.raises(InputFileError, match=r"line 3: source frame .*0000007\.png' is missing"):
        read_pairs(csv, [a, b], vids)


# --------------------------------------------------------------------------------------------------------
# bad input: one line each
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["unknown_protocol", "smac_without_pairs", "fomm_with_pairs", "missing_frame",
                                  "unknown_video"])
def test_bad_protocol_and_pairs_one_line(case, data, tmp_path, capsys):
    root, (a, b) = data
    args = ["eval", RECIPE, "--random-weights", "--data", str(root), "--no-progress", "--metrics", "L1",
            "--out", str(tmp_path / "o.json")]
    csv = tmp_path / "p.csv"
    if case == "unknown_protocol":
        rc = thkit_main(args + ["--protocol", "vox"])
        needles = ["unknown evaluation protocol 'vox'", "cross-id, fomm, reconstruction, smac"]
    elif case == "smac_without_pairs":
        rc = thkit_main(args + ["--protocol", "smac"])
        needles = ["smac protocol needs --pairs", "source,driving"]
    elif case == "fomm_with_pairs":
        _official_csv(csv, [(f"{a}/0000000.png", f"{a}/0000001.png")])
        rc = thkit_main(args + ["--protocol", "fomm", "--pairs", str(csv)])
        needles = ["--pairs is not used by the fomm protocol", "cross-id, smac"]
    elif case == "missing_frame":
        _official_csv(csv, [(f"{a}/0000000.png", f"{a}/0000001.png"), (f"{a}/0000000.png", f"{b}/0000009.png")])
        rc = thkit_main(args + ["--protocol", "smac", "--pairs", str(csv)])
        needles = [f"{csv} line 3", "driving frame", "0000009.png", "is missing"]
    else:
        _official_csv(csv, [("idX#nope/0000000.png", f"{a}/0000001.png")])
        rc = thkit_main(args + ["--protocol", "smac", "--pairs", str(csv)])
        needles = [f"{csv} line 2", "idX#nope", "names no video"]
    assert rc == 2
    one_line_error(capsys, *needles)
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("content,needles", [
    (b"source,driving\n\"a/0000000.png,b/0000001.png\n", ["line 2", "malformed CSV"]),
    (b"source,driving\nA/0000000.png\n", ["line 2", "1 column(s)", "source and driving"]),
    (b"A/0000000.png,A/0000001.png\n", ["line 1", "header", "source,driving,frame"]),
    (b"source,driving\nA/0000000.png,A/0000001.png\nA/0000000.png,\xff\n", ["line 3", "not UTF-8"]),
    (b"source,driving\n\nA/0000000.png,\n", ["line 3", "driving value is empty"]),
    (b"source,driving\nA,A/0000001.png\n", ["line 2", "names a whole video", "<video>/<frame file>"]),
    (b"\n\n", ["is empty"]),
])
def test_malformed_pairs_list_names_file_and_line(content, needles, data, tmp_path):
    root, (a, _) = data
    csv = tmp_path / "bad.csv"
    csv.write_bytes(content.replace(b"A", a.encode()))
    with pytest.raises(InputFileError) as e:
        read_frame_pairs(csv, [a], [root / "test" / a])
    msg = str(e.value)
    assert "\n" not in msg and str(csv) in msg
    for n in needles:
        assert n in msg, msg

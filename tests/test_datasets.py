"""Datasets: VoxCeleb layout (png folders, mp4, concatenated png), broken videos, repeats, pair augmentation,
the synthetic talking heads (determinism, exact landmarks) and ``thkit data synth``."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from thkit.datasets.augment import PairAugmentation
from thkit.datasets.frames import DatasetError, DataWarning, FramesDataset, open_video, write_video
from thkit.datasets.synthetic import (
    GENERATOR_VERSION,
    LABELS,
    LANDMARK_NAMES,
    HeadIdentity,
    HeadMotion,
    HeadRenderer,
    SyntheticTalkingHeads,
    WarpMotion,
    WarpRenderer,
    plan_videos,
    render_video,
)
from thkit.errors import ThkitError

LEVELS = [0, 40, 80, 120, 160, 200, 240]


def _frames(n: int, size: int = 16) -> np.ndarray:
    """n frames, frame i has grey level LEVELS[i] (so a pixel value tells the frame index)."""
    return np.stack([np.full((size, size, 3), LEVELS[i], np.uint8) for i in range(n)])


def _png_video(folder, n: int, names=None):
    folder.mkdir(parents=True)
    for i, f in enumerate(_frames(n)):
        Image.fromarray(f).save(folder / (names[i] if names else f"{i:07d}.png"))


def _mp4(path, n: int):
    """A lossless mp4 written with PyAV directly (independent of thkit's writer)."""
    import av

    with av.open(str(path), mode="w") as c:
        st = c.add_stream("libx264rgb", rate=25)
        st.width = st.height = 16
        st.pix_fmt = "rgb24"
        st.options = {"crf": "0"}
        for f in _frames(n):
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def _level(img: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> int:
    """Frame index from an image's (uniform) value."""
    v = float(((img.mean() - lo) / (hi - lo)) * 255)
    return int(np.argmin([abs(v - lv) for lv in LEVELS]))


# --------------------------------------------------------------------------------------------------------
# layout reading
# --------------------------------------------------------------------------------------------------------
def test_png_folders_pairs_range_and_repeats(tmp_path):
    _png_video(tmp_path / "train" / "id1#a#0#5.mp4", 5)
    # names that sort differently as text and as numbers: natural order must win
    _png_video(tmp_path / "train" / "vidB", 3, names=["f2.png", "f10.png", "f1.png"])
    (tmp_path / "test").mkdir()
    ds = FramesDataset(tmp_path, image_size=8, num_repeats=3)
    assert len(ds) == 6 and ds.names == ["id1#a#0#5", "vidB"]
    torch.manual_seed(0)
    for k in range(12):
        item = ds[k % len(ds)]
        assert set(item) == {"source", "driving", "video", "frame_ids"}
        assert item["source"].shape == (3, 8, 8) and item["source"].dtype == torch.float32
        i, j = item["frame_ids"]
        assert i <= j  # FOMM: the pair is sorted
        assert item["video"] == ds.names[k % 2]
        if item["video"] == "id1#a#0#5":
            assert (_level(item["source"]), _level(item["driving"])) == (i, j)
    # vidB: natural order f1, f2, f10 -> levels of frames 2, 0, 1
    src = open_video(tmp_path / "train" / "vidB")
    assert [int(f.mean()) for f in src.read_all()] == [LEVELS[2], LEVELS[0], LEVELS[1]]

    ds2 = FramesDataset(tmp_path, image_size=None, input_range=(-1, 1))
    item = ds2[0]
    assert item["source"].shape == (3, 16, 16)
    assert item["source"].min() >= -1 and _level(item["source"], -1, 1) == item["frame_ids"][0]


def test_concatenated_png_video(tmp_path):
    (tmp_path / "test").mkdir(parents=True)
    Image.fromarray(np.concatenate(list(_frames(3)), axis=1)).save(tmp_path / "test" / "clip.png")
    ds = FramesDataset(tmp_path, mode="test", image_size=None)
    assert len(ds) == 3 and ds.names == ["clip"]
    assert [_level(ds[t]["driving"]) for t in range(3)] == [0, 1, 2]


def test_mp4_train_and_reconstruction(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        _mp4(tmp_path / split / "talk.mp4", 6)
    ds = FramesDataset(tmp_path, image_size=16)
    assert ds.names == ["talk"]
    torch.manual_seed(1)
    for _ in range(5):
        item = ds[0]
        i, j = item["frame_ids"]
        assert (_level(item["source"]), _level(item["driving"])) == (i, j)

    rec = FramesDataset(tmp_path, mode="reconstruction", image_size=16, max_frames=5)
    assert len(rec) == 5
    for t in range(5):
        item = rec[t]
        assert item["frame_ids"] == (0, t) and item["num_frames"] == 5
        assert _level(item["source"]) == 0 and _level(item["driving"]) == t
    names = [n for n, v in rec.videos()]
    assert names == ["talk"] and rec.video_frames(0).shape == (5, 3, 16, 16)


def test_write_video_round_trip(tmp_path):
    frames = _frames(4)
    path = write_video(tmp_path / "x.mp4", frames, codec="libx264rgb", pix_fmt="rgb24", crf=0)
    assert np.array_equal(open_video(path).read_all(), frames)
    with pytest.raises(ThkitError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8))


def test_broken_videos_are_skipped_with_a_warning(tmp_path):
    for split in ("train", "test"):
        d = tmp_path / split
        d.mkdir()
        _png_video(d / "good", 4)
        (d / "broken.mp4").write_bytes(b"this is not a video" * 10)
        (d / "empty").mkdir()
    ds = FramesDataset(tmp_path, image_size=8, num_repeats=4)
    assert len(ds) == 12  # three entries, checked lazily
    with pytest.warns(DataWarning) as rec:
        items = [ds[k] for k in range(len(ds))]
    msgs = " ".join(str(w.message) for w in rec)
    assert "broken.mp4" in msgs and "empty" in msgs
    assert all(it["video"] == "good" for it in items)

    with pytest.warns(DataWarning) as rec:
        test = FramesDataset(tmp_path, mode="test", image_size=8)
    msgs = " ".join(str(w.message) for w in rec)
    assert "broken.mp4" in msgs and "empty" in msgs
    assert len(test) == 4 and {test[t]["video"] for t in range(4)} == {"good"}


def test_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        FramesDataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no 'train' folder"):
        FramesDataset(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no videos in"):
        FramesDataset(tmp_path)
    (tmp_path / "train" / "bad.mp4").write_bytes(b"garbage")
    ds = FramesDataset(tmp_path)
    with pytest.warns(DataWarning), pytest.raises(DatasetError, match="no readable video"):
        ds[0]
    with pytest.raises(DatasetError, match="mode"):
        FramesDataset(tmp_path, mode="eval")


# --------------------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------------------
def _asymmetric(size=12):
    img = torch.zeros(3, size, size)
    img[0, :, : size // 3] = 1.0  # red band on the left
    img[1, 2:5, :] = 0.5
    return img


def test_pair_augmentation_is_consistent():
    torch.manual_seed(0)
    img = _asymmetric()
    aug = PairAugmentation(flip_p=0.5, time_flip_p=0.0,
                           jitter=dict(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.2))
    flips = set()
    for _ in range(20):
        out = aug({"source": img.clone(), "driving": img.clone(), "frame_ids": (1, 2)})
        # identical frames stay identical: the same flip and the same jitter were applied to both
        assert torch.allclose(out["source"], out["driving"], atol=1e-6)
        assert not torch.allclose(out["source"], img)  # jitter changed them
        flips.add(out["augmentation"]["hflip"])
        left = out["source"][:, :, :4].mean() - out["source"][:, :, -4:].mean()
        assert (left < 0) == out["augmentation"]["hflip"]  # the red band moved right iff flipped
    assert flips == {True, False}

    plain = PairAugmentation(flip_p=1.0, time_flip_p=1.0, jitter=dict(brightness=0, contrast=0, saturation=0, hue=0))
    drv = torch.rand(3, 12, 12)
    lm_s = torch.tensor([[-0.5, 0.1], [0.3, 0.2]])
    lm_d = torch.tensor([[-0.4, 0.0], [0.2, 0.1]])
    out = plain({"source": img, "driving": drv, "frame_ids": (3, 7), "landmarks_source": lm_s,
                 "landmarks_driving": lm_d})
    assert torch.equal(out["source"], drv.flip(-1)) and torch.equal(out["driving"], img.flip(-1))
    assert out["frame_ids"] == (7, 3)
    assert torch.allclose(out["landmarks_source"], lm_d * torch.tensor([-1.0, 1.0]))
    swapped = PairAugmentation(flip_p=1.0, time_flip_p=0.0, flip_pairs=[(0, 1)], jitter=dict(brightness=0))
    out = swapped({"source": img, "driving": img, "landmarks_source": lm_s, "landmarks_driving": lm_d})
    assert torch.allclose(out["landmarks_source"], torch.tensor([[-0.3, 0.2], [0.5, 0.1]]))


def test_dataset_builds_augmentation_from_config(tmp_path):
    _png_video(tmp_path / "train" / "v", 3)
    ds = FramesDataset(tmp_path, image_size=8, augmentation=dict(flip_p=1.0, time_flip_p=0.0))
    assert isinstance(ds.augmentation, PairAugmentation)
    assert ds[0]["augmentation"]["hflip"] is True


# --------------------------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_varied():
    spec = plan_videos(4, test_fraction=0.25, warp_fraction=0.0)[1]
    a, b = render_video(spec, 7, 5, 32), render_video(spec, 7, 5, 32)
    assert a["frames"].shape == (5, 32, 32, 3) and a["frames"].dtype == np.uint8
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["landmarks"], b["landmarks"])
    c = render_video(spec, 8, 5, 32)
    assert not np.array_equal(a["frames"], c["frames"])
    # the video moves, smoothly: consecutive frames differ, but less than distant ones
    long = render_video(spec, 7, 24, 32)
    lm = long["landmarks"]
    step = np.abs(np.diff(lm, axis=0)).mean()
    assert 0 < step < 1.5 and np.abs(lm - lm[0]).mean(axis=(1, 2)).max() > 2 * step


def test_plan_videos_layout():
    specs = plan_videos(20, test_fraction=0.1, warp_fraction=0.1)
    assert [s.split for s in specs].count("test") == 2
    assert [s.kind for s in specs].count("warp") == 1  # one in 18 train videos, none in 2 test videos
    assert all(s.name.split("#")[0].startswith(s.kind) for s in specs)
    assert len({s.name for s in specs}) == 20


def test_head_landmarks_fall_on_the_drawn_features():
    size = 128
    expect = {12: {"pupil"}, 13: {"pupil"}, 14: {"nose"}, 0: {"brow"}, 1: {"brow"}, 2: {"brow"}, 3: {"brow"},
              15: {"lip"}, 16: {"lip"}, 17: {"lip"}, 18: {"lip"}}
    names = {v: k for k, v in LABELS.items()}
    checked = 0
    for k in range(3):
        idt = HeadIdentity.sample(np.random.default_rng([5, k]))
        motion = HeadMotion.sample(np.random.default_rng([6, k]), 6)
        out = HeadRenderer(size).render(idt, motion)
        assert out["landmarks"].shape == (6, len(LANDMARK_NAMES), 2)
        for t in range(6):
            for i, want in expect.items():
                if not out["visible"][t, i] or (i in (12, 13) and motion.eye_open[t] < 0.6):
                    continue
                x, y = np.round(out["landmarks"][t, i]).astype(int)
                if i in (12, 13, 14):  # centres: the landmark's own pixel
                    at = names[int(out["labels"][t, y, x])]
                    assert at in (want | {"iris"}), f"{LANDMARK_NAMES[i]} at ({x}, {y}) of frame {t} lies on {at}"
                # every landmark within a pixel of its feature (pupils are ~2 px wide at this size)
                got = {names[v] for v in np.unique(out["labels"][t, y - 1:y + 2, x - 1:x + 2])}
                assert got & want, f"{LANDMARK_NAMES[i]} at ({x}, {y}) of frame {t} lies on {got}, not {want}"
                checked += 1
        assert out["frames"][out["labels"] == LABELS["pupil"]].mean() < 40  # pupils are drawn dark
    assert checked > 120


def test_warp_landmarks_are_exact():
    """Bright dots at the base landmarks land on the ground-truth landmarks of every warped frame."""
    size = 128
    r = WarpRenderer(size)
    src_img = r._crop_to_image(r.src)
    full = r.image.shape[-1]
    centres = (src_img + 1) * (full - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(full).float(), torch.arange(full).float(), indexing="ij")
    keep = [0, 3, 14, 15, 16, 21]  # well separated points
    dots = sum(torch.exp(-((xx - centres[k, 0]) ** 2 + (yy - centres[k, 1]) ** 2) / 2.0) for k in keep)
    r.image = dots.expand(1, 3, full, full).contiguous()
    motion = WarpMotion.sample(np.random.default_rng(3), 6)
    out = r.render(motion)
    for t in range(6):
        frame = out["frames"][t, :, :, 0].astype(float)
        for k in keep:
            x, y = out["landmarks"][t, k]
            xi, yi = int(round(x)), int(round(y))
            patch = frame[yi - 3:yi + 4, xi - 3:xi + 4]
            py, px = np.unravel_index(patch.argmax(), patch.shape)
            assert abs(px - 3 + xi - x) <= 1.0 and abs(py - 3 + yi - y) <= 1.0, (t, LANDMARK_NAMES[k])
            assert patch.max() > 120


def test_cli_writes_the_layout_and_the_dataset_reads_it(tmp_path):
    from thkit.cli import main

    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--videos", "3", "--frames", "4", "--size", "32",
                 "--seed", "2", "--no-progress", "--warp-fraction", "0.5"]) == 0
    train, test = sorted(p.name for p in (out / "train").iterdir()), sorted(p.name for p in (out / "test").iterdir())
    assert len(train) == 2 and len(test) == 1
    assert sorted(p.name for p in (out / "train" / train[0]).iterdir()) == [f"{i:07d}.png" for i in range(4)]
    gt = json.loads((out / "ground_truth.json").read_text())
    assert gt["landmark_names"] == list(LANDMARK_NAMES) and gt["size"] == [32, 32]
    rec = gt["videos"][f"train/{train[0]}"]
    assert np.asarray(rec["landmarks"]).shape == (4, 22, 2) and np.asarray(rec["visible"]).shape == (4, 22)
    assert {v["kind"] for v in gt["videos"].values()} == {"head", "warp"}
    assert main(["data", "synth", "--out", str(out), "--no-progress"]) == 2  # exists: one-line error

    ds = FramesDataset(out, image_size=32)
    item = ds[0]
    assert item["landmarks_source"].shape == (22, 2) and item["visible_driving"].dtype == torch.bool
    # keypoint coordinates of the stored landmarks: x = 2 px / (S - 1) - 1
    px = np.asarray(gt["videos"][f"train/{item['video']}"]["landmarks"][item["frame_ids"][0]])
    assert torch.allclose(item["landmarks_source"], torch.tensor(2 * px / 31 - 1, dtype=torch.float32), atol=1e-5)

    mp4 = tmp_path / "synth_mp4"
    assert main(["data", "synth", "--out", str(mp4), "--videos", "2", "--frames", "3", "--size", "16",
                 "--format", "mp4", "--no-progress"]) == 0
    assert sorted(p.suffix for p in (mp4 / "train").iterdir()) == [".mp4"]
    assert len(FramesDataset(mp4, mode="test", image_size=16)) == 3


def test_synthetic_dataset_synthesizes_when_missing(tmp_path):
    from mmengine.registry import DATASETS as MM_DATASETS
    from mmengine.registry import DefaultScope
    from torch.utils.data import DataLoader

    root = tmp_path / "data" / "synth16"
    with pytest.raises(DatasetError, match="does not exist"):
        SyntheticTalkingHeads(root, synthesize_if_missing=False)
    cfg = dict(type="SyntheticTalkingHeads", root=str(root), image_size=16, num_repeats=2,
               synth=dict(videos=3, frames=4, warp_fraction=0.0), augmentation=dict(time_flip_p=0.0))
    with DefaultScope.overwrite_default_scope("thkit"):
        ds = MM_DATASETS.build(cfg)  # mmengine's root registry finds it under the thkit scope
    assert isinstance(ds, SyntheticTalkingHeads) and root.is_dir() and len(ds) == 4
    assert ds.augmentation.flip_pairs  # left/right landmark pairs came from the ground truth
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["source"].shape == (2, 3, 16, 16) and batch["landmarks_driving"].shape == (2, 22, 2)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same options: reused silently
        again = SyntheticTalkingHeads(root, image_size=16, synth=dict(videos=3, frames=4, warp_fraction=0.0))
    assert again.names == ds.names
    with pytest.warns(DataWarning, match="other options"):
        SyntheticTalkingHeads(root, image_size=16, synth=dict(videos=5, frames=4, warp_fraction=0.0))
    # data written by an older generator (no version stored: version 1) is reported, not silently reused
    gt = root / "ground_truth.json"
    data = json.loads(gt.read_text())
    del data["generator"]["generator_version"]
    gt.write_text(json.dumps(data))
    with pytest.warns(DataWarning, match=f"generator_version: 1 != {GENERATOR_VERSION}"):
        SyntheticTalkingHeads(root, image_size=16, synth=dict(videos=3, frames=4, warp_fraction=0.0))
    # ... and so is data of the version before (2: the warp videos had their own thin-plate spline copy)
    data["generator"]["generator_version"] = GENERATOR_VERSION - 1
    gt.write_text(json.dumps(data))
    with pytest.warns(DataWarning, match=f"generator_version: {GENERATOR_VERSION - 1} != {GENERATOR_VERSION}"):
        SyntheticTalkingHeads(root, image_size=16, synth=dict(videos=3, frames=4, warp_fraction=0.0))


def test_parallel_writing_gives_the_same_data(tmp_path):
    from thkit.datasets.synthetic import write_synthetic_dataset

    a = write_synthetic_dataset(tmp_path / "a", videos=3, frames=3, size=16, seed=4, progress=False, workers=1)
    b = write_synthetic_dataset(tmp_path / "b", videos=3, frames=3, size=16, seed=4, progress=False, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files) == 10
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_id_sampling_draws_a_person_then_a_video(tmp_path):
    for name in ("p1#a#0#1", "p1#b#0#1", "p2#c#0#1"):
        _png_video(tmp_path / "train" / name, 2)
    ds = FramesDataset(tmp_path, image_size=8, id_sampling=True, num_repeats=2)
    assert len(ds) == 4  # two people, twice
    torch.manual_seed(0)
    seen = {k: {ds[k]["video"] for _ in range(20)} for k in range(2)}
    assert seen == {0: {"p1#a#0#1", "p1#b#0#1"}, 1: {"p2#c#0#1"}}


def test_data_info_names_unreadable_videos(tmp_path, capsys):
    from thkit.cli import main

    _png_video(tmp_path / "train" / "good", 3)
    (tmp_path / "train" / "broken.mp4").write_bytes(b"nope")
    assert main(["data", "info", str(tmp_path), "--sizes"]) == 0
    out = capsys.readouterr().out
    assert "train: 2 videos, 3 frames, frame sizes [(16, 16)], 1 unreadable" in out and "broken.mp4" in out
    assert main(["data", "info", str(tmp_path), "--strict"]) == 1
    assert main(["data", "info", str(tmp_path / "missing")]) == 2

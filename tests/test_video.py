"""thkit.video, the one PyAV module: datasets and inference read and write through it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from thkit.datasets.frames import VideoReadError, open_video, read_video
from thkit.inference.errors import VideoDecodeError, VideoWriteError
from thkit.video import as_uint8_frames, count_frames, iter_frames, probe_video, write_video


def _frames(t=5, h=16, w=24, seed=0):
    return (np.random.default_rng(seed).random((t, h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9")])
def test_count_frames_with_and_without_a_container_count(tmp_path, ext, codec):
    import av

    path = write_video(tmp_path / f"v.{ext}", _frames(7), codec=codec)
    with av.open(str(path)) as c:
        stated = c.streams.video[0].frames  # mp4 states it, Matroska / WebM do not (packets are counted)
    assert (stated > 0) == (ext == "mp4")
    assert count_frames(path) == 7 == len(list(iter_frames(path)))
    info = probe_video(path)
    assert (info.width, info.height) == (24, 16) and float(info.fps) == 25.0


def test_lossless_round_trip_and_float_frames(tmp_path):
    frames = _frames(4)
    path = write_video(tmp_path / "x.mp4", frames, codec="libx264rgb", pix_fmt="rgb24", crf=0)
    assert np.array_equal(np.stack(list(iter_frames(path))), frames)
    assert np.array_equal(read_video(path), frames)  # the dataset reader decodes the same frames
    as_float = torch.from_numpy(frames).float() / 255
    assert np.array_equal(as_uint8_frames(as_float), frames)
    assert [f.shape for f in iter_frames(path, max_frames=2)] == [(16, 24, 3)] * 2


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        count_frames(bad)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        list(iter_frames(bad))
    with pytest.raises(VideoReadError, match="broken.mp4"):  # the dataset's error type
        open_video(bad)
    with pytest.raises(VideoWriteError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8))
    with pytest.raises(VideoWriteError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "gray.mp4", np.zeros((2, 16, 16), np.uint8))


def test_dataset_reader_reports_a_wrong_frame_index(tmp_path):
    src = open_video(write_video(tmp_path / "v.mkv", _frames(3)))
    assert len(src) == 3 and src.read([2, 0]).shape == (2, 16, 24, 3)
    with pytest.raises(VideoReadError, match="out of range"):
        src.read([3])


def test_inference_names_are_thkit_video():
    import thkit.inference.video as old
    import thkit.video as new

    for name in old.__all__:
        assert getattr(old, name) is getattr(new, name)

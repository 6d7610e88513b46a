"""Videos in the FOMM VoxCeleb layout, and the frame/video I/O helpers every thkit dataset uses.

Layout (as AliaksandrSiarohin/video-preprocessing writes it)::

    root/train/<video>        one entry per video, either
    root/test/<video>           - a folder of frame images (png/jpg, any sortable names: 0000000.png ...),
                                - a video file read with PyAV (.mp4, .avi, .mov, .mkv, .webm, .gif; through
                                  :mod:`thkit.video`, the one module that decodes and encodes videos),
                                - or one image holding the frames side by side (FOMM's concatenated png).
    root/ground_truth.json    optional, written by ``thkit data synth``: per-frame landmarks

Video names follow VoxCeleb's ``<person_id>#<youtube_id>#<start>#<end>``; with ``id_sampling=True`` an item
first draws a person (the text before the first ``#``) and then one of its videos (FOMM's ``id_sampling``).

:class:`FramesDataset` has two modes:

* ``mode='train'``: item ``i`` is a random pair of frames of video ``i % num_videos`` (FOMM's
  ``FramesDataset`` + ``DatasetRepeater`` via ``num_repeats``), with optional pair augmentation
  (:class:`thkit.datasets.augment.PairAugmentation`);
* ``mode='reconstruction'`` (alias ``'test'``): FOMM's reconstruction protocol, one item per frame of every
  video, in order, the first frame being the source of all of them.  :meth:`FramesDataset.video_frames`
  returns one whole video.

Unreadable videos (broken files, empty folders) are skipped with a :class:`DataWarning` naming them; the
dataset never fails in the middle of an epoch because of one bad video.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from thkit.errors import ThkitError
from thkit.inference.errors import InputFileError
from thkit.registry import DATASETS, TRANSFORMS
from thkit.value_range import as_range, from_unit
from thkit.video import as_uint8_frames, count_frames, iter_frames, write_video

Tensor = torch.Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v")
GROUND_TRUTH_FILE = "ground_truth.json"
MODES = ("train", "reconstruction", "test")


class DatasetError(ThkitError):
    """A dataset cannot be used as configured (missing root, no videos, bad option)."""


class VideoReadError(ThkitError):
    """One video cannot be read (names the file and the reason)."""


class DataWarning(UserWarning):
    """Something in a dataset was skipped (an unreadable video, ground truth that does not match)."""


# --------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------
def natural_key(name: str) -> list:
    """Sort key that orders ``frame2.png`` before ``frame10.png`` (digit runs compared as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def video_stem(name: str) -> str:
    """A video's name without its video extension (VoxCeleb png folders are named ``<name>.mp4`` too)."""
    low = name.lower()
    for ext in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _to_rgb_array(img) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(arr)


class VideoSource:
    """Frames of one video, read lazily: ``len(src)`` frames, ``src.read(indices)`` -> (n, H, W, 3) uint8.

    Use :func:`open_video`; it picks the reader from what ``path`` is.  Every failure is a
    :class:`VideoReadError` naming the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, indices: Sequence[int]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_all(self) -> np.ndarray:
        return self.read(range(len(self)))

    def _error(self, why: str) -> VideoReadError:
        return VideoReadError(f"cannot read video {self.path}: {why}")

    def _check(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        n = len(self)
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise self._error(f"frame index {bad[0]} out of range (the video has {n} frames)")
        return idx


class FolderSource(VideoSource):
    """A folder of frame images, in natural sort order of their names."""

    def __init__(self, path):
        super().__init__(path)
        try:
            names = [n for n in os.listdir(self.path) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
        except OSError as e:
            raise self._error(str(e)) from e
        if not names:
            raise self._error(f"the folder has no frame images ({', '.join(IMAGE_EXTENSIONS)})")
        self.files = [self.path / n for n in sorted(names, key=natural_key)]

    def __len__(self) -> int:
        return len(self.files)

    def read(self, indices):
        from PIL import Image

        frames = []
        for i in self._check(indices):
            try:
                with Image.open(self.files[i]) as im:
                    frames.append(_to_rgb_array(im))
            except Exception as e:  # noqa: BLE001 - any decoder failure is a broken frame
                raise self._error(f"frame {self.files[i].name}: {e}") from e
        return _stack(frames, self)


class ConcatImageSource(VideoSource):
    """One image holding square frames side by side (FOMM's ``.png`` video format); else a 1-frame video."""

    def __init__(self, path):
        super().__init__(path)
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                self._image = _to_rgb_array(im)
        except Exception as e:  # noqa: BLE001
            raise self._error(str(e)) from e
        h, w = self._image.shape[:2]
        self._n = w // h if h > 0 and w % h == 0 else 1
        self._w = w // self._n

    def __len__(self) -> int:
        return self._n

    def read(self, indices):
        return _stack([self._image[:, i * self._w:(i + 1) * self._w] for i in self._check(indices)], self)


class AVSource(VideoSource):
    """A video file decoded with PyAV through :mod:`thkit.video` (any container/codec its FFmpeg reads)."""

    def __init__(self, path):
        super().__init__(path)
        self._n = self._av(count_frames, self.path)

    def _av(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` with :mod:`thkit.video`'s errors as this dataset's :class:`VideoReadError`."""
        try:
            return fn(*args, **kwargs)
        except InputFileError as e:  # VideoDecodeError included
            raise VideoReadError(str(e)) from e

    def __len__(self) -> int:
        return self._n

    def decode(self, stop: int | None = None) -> np.ndarray:
        """The first ``stop`` frames (all when None) as (n, H, W, 3) uint8."""
        return _stack(self._av(lambda: list(iter_frames(self.path, max_frames=stop))), self)

    def read(self, indices):
        idx = self._check(indices)
        frames = self.decode(stop=max(idx) + 1)
        if len(frames) <= max(idx):  # the container's frame count was wrong
            self._n = len(frames)
            raise self._error(f"it has only {len(frames)} decodable frames, frame {max(idx)} was asked for")
        return frames[idx]

    def read_all(self):
        frames = self.decode()
        self._n = len(frames)
        return frames


def _stack(frames: list[np.ndarray], src: VideoSource) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise src._error(f"frames have different sizes {sorted(shapes)}")
    return np.stack(frames)


def open_video(path: str | os.PathLike) -> VideoSource:
    """A :class:`VideoSource` for a frame folder, a video file (PyAV) or a concatenated-frames image."""
    p = Path(path)
    if p.is_dir():
        return FolderSource(p)
    if not p.exists():
        raise VideoReadError(f"cannot read video {p}: no such file or folder")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return ConcatImageSource(p)
    return AVSource(p)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video as (T, H, W, 3) uint8 RGB."""
    return open_video(path).read_all()


def write_frames(folder: str | os.PathLike, frames: np.ndarray | Tensor, digits: int = 7,
                 compress_level: int = 1) -> Path:
    """Write (T, H, W, 3) uint8 frames as ``folder/0000000.png ...`` (VoxCeleb png layout)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(as_uint8_frames(frames)):
        Image.fromarray(f).save(folder / f"{i:0{digits}d}.png", compress_level=compress_level)
    return folder


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """Entries of ``folder`` that are videos: sub-folders, video files and images, in natural order."""
    folder = Path(folder)
    out = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        low = entry.name.lower()
        if entry.is_dir() or low.endswith(VIDEO_EXTENSIONS) or low.endswith(IMAGE_EXTENSIONS):
            out.append(Path(entry.path))
    return sorted(out, key=lambda p: natural_key(p.name))


# --------------------------------------------------------------------------------------------------------
# tensors
# --------------------------------------------------------------------------------------------------------
def to_tensor(frames: np.ndarray, image_size: tuple[int, int] | None, input_range: tuple[float, float]) -> Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, h, w) float in ``input_range``, resized (antialiased bilinear)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    x = resize(x, image_size)
    return from_unit(x, input_range)


def resize(x: Tensor, image_size: tuple[int, int] | None) -> Tensor:
    if image_size is None or tuple(x.shape[-2:]) == tuple(image_size):
        return x
    return F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def pixels_to_normalized(points: np.ndarray | Tensor, src_size: tuple[int, int],
                         dst_size: tuple[int, int] | None = None) -> Tensor:
    """Pixel (x, y) coordinates (pixel centres at integers) in an image of ``src_size`` (h, w) to thkit's
    keypoint coordinates of the (resized) image of ``dst_size``: ``2 x / (w - 1) - 1`` (the convention of
    :func:`thkit.layers.grid.make_coordinate_grid`).  Resizing maps pixel centres ``(x + 0.5) w'/w - 0.5``.
    """
    p = torch.as_tensor(np.asarray(points, dtype=np.float32))
    sh, sw = src_size
    dh, dw = dst_size or src_size
    x = (p[..., 0] + 0.5) * dw / sw - 0.5
    y = (p[..., 1] + 0.5) * dh / sh - 0.5
    return torch.stack([2 * x / (dw - 1) - 1, 2 * y / (dh - 1) - 1], dim=-1)


def _size2(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(h), int(w))


# --------------------------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------------------------
@DATASETS.register_module()
class FramesDataset(Dataset):
    """Videos in the FOMM VoxCeleb layout (``root/train``, ``root/test``), as (source, driving) frame pairs.

    Follows FOMM's ``FramesDataset`` (two frames of one video, sorted, drawn uniformly with replacement) and
    ``DatasetRepeater`` (``num_repeats``); the reconstruction mode is FOMM's ``reconstruction`` protocol
    (source = frame 0, driving = every frame).

    Args:
        root: dataset folder holding ``train/`` and ``test/``.
        split: sub-folder to read (``'train'`` / ``'test'``); default ``'train'`` in train mode and ``'test'``
            otherwise; ``''`` reads ``root`` itself.
        mode: ``'train'`` (random pairs) or ``'reconstruction'`` / ``'test'`` (every frame of every video).
        image_size: output size (int or (h, w)); frames are resized with antialiased bilinear
            interpolation.  None keeps the stored size.
        input_range: value range of the output images: ``(0, 1)`` (FOMM, TPSMM) or ``(-1, 1)`` (SMAC).
        num_repeats: train mode: the dataset is this many passes over the videos (FOMM's DatasetRepeater).
        augmentation: train mode: a :class:`~thkit.datasets.augment.PairAugmentation` config dict (built
            from ``TRANSFORMS``), a callable on the item dict (images in [0, 1]), or None.
        id_sampling: train mode: draw a person first, then one of its videos (names ``person#...``).
        num_videos: keep only the first N videos (FOMM's ``num_videos`` of the reconstruction protocol).
        max_frames: reconstruction mode: use at most this many frames of each video.
        ground_truth: ``'auto'`` reads ``root/ground_truth.json`` when it exists (synthetic data: adds
            ``landmarks_source`` / ``landmarks_driving`` (K, 2) in keypoint coordinates and
            ``visible_source`` / ``visible_driving`` (K,) to each item); a path; or None.
        max_retries: train mode: how many other videos to try when one cannot be read.

    Items: ``{'source': (3, H, W) float, 'driving': (3, H, W) float, 'video': name, 'frame_ids': (i, j)}``
    (+ the ground truth above); reconstruction items also have ``'num_frames'`` of their video.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        mode: str = "train",
        image_size: int | Sequence[int] | None = 256,
        input_range: Sequence[float] = (0.0, 1.0),
        num_repeats: int = 1,
        augmentation: dict | Callable | None = None,
        id_sampling: bool = False,
        num_videos: int | None = None,
        max_frames: int | None = None,
        ground_truth: str | os.PathLike | None = "auto",
        max_retries: int = 100,
    ):
        if mode not in MODES:
            raise DatasetError(f"FramesDataset: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = "reconstruction" if mode == "test" else mode
        self.root = Path(root)
        if split is None:
            split = "train" if self.mode == "train" else "test"
        self.split = split
        self.image_size = _size2(image_size)
        try:
            self.input_range = as_range(input_range, "FramesDataset: input_range")
        except ValueError as e:
            raise DatasetError(str(e)) from None
        if int(num_repeats) < 1:
            raise DatasetError(f"FramesDataset: num_repeats must be >= 1, got {num_repeats}")
        self.num_repeats = int(num_repeats)
        self.id_sampling = bool(id_sampling)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.max_retries = int(max_retries)

        if not self.root.exists():
            raise DatasetError(f"dataset root {self.root} does not exist")
        folder = self.root / split if split else self.root
        if not folder.is_dir():
            raise DatasetError(
                f"dataset root {self.root} has no '{split}' folder (expected root/train and root/test with one "
                "frame folder or video file per video: the FOMM VoxCeleb layout)"
            )
        self.folder = folder
        paths = list_videos(folder)
        if num_videos is not None:
            paths = paths[: int(num_videos)]
        if not paths:
            raise DatasetError(f"no videos in {folder} (expected one folder of frames or one video file per video)")
        self.paths = paths
        self.names = [video_stem(p.name) for p in paths]
        self.bad: set[int] = set()
        self._cache: tuple[int, np.ndarray] | None = None
        self.ground_truth_meta: dict[str, Any] = {}
        self.ground_truth = self._load_ground_truth(ground_truth)
        if (isinstance(augmentation, dict) and "flip_pairs" not in augmentation
                and self.ground_truth_meta.get("flip_pairs")):
            # a flip exchanges left and right landmarks: take the pairs from the ground truth
            augmentation = dict(augmentation, flip_pairs=self.ground_truth_meta["flip_pairs"])
        self.augmentation = _build_augmentation(augmentation)

        if self.id_sampling:
            groups: dict[str, list[int]] = {}
            for i, n in enumerate(self.names):
                groups.setdefault(n.split("#")[0], []).append(i)
            self._ids = sorted(groups)
            self._groups = groups
        if self.mode == "reconstruction":
            self._index_frames()

    # -- bookkeeping ------------------------------------------------------------------------------------
    @property
    def num_videos(self) -> int:
        return len(self.paths)

    def _load_ground_truth(self, gt) -> dict[str, Any] | None:
        if gt is None:
            return None
        path = self.root / GROUND_TRUTH_FILE if gt == "auto" else Path(gt)
        if not path.is_file():
            if gt != "auto":
                raise DatasetError(f"ground truth file {path} does not exist")
            return None
        try:
            data = json.loads(path.read_text())
            videos = data["videos"]
            size = tuple(int(v) for v in data["size"])  # (h, w) of the stored frames
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"ground truth file {path} is not valid: {type(e).__name__}: {e}") from e
        prefix = f"{self.split}/" if self.split else ""
        missing = [n for n in self.names if prefix + n not in videos]
        if missing:
            warnings.warn(f"{path}: no ground truth for {len(missing)} video(s) of {self.folder} (first: "
                          f"{missing[0]}); items will carry no landmarks", DataWarning, stacklevel=3)
            return None
        out = {}
        for n in self.names:
            v = videos[prefix + n]
            out[n] = {
                "landmarks": np.asarray(v["landmarks"], dtype=np.float32),
                "visible": np.asarray(v.get("visible", np.ones(np.shape(v["landmarks"])[:2])), dtype=bool),
            }
        self.ground_truth_meta = {k: data[k] for k in data if k != "videos"}
        self._gt_size = size
        return out

    def _index_frames(self) -> None:
        counts = []
        for i, p in enumerate(self.paths):
            try:
                n = len(open_video(p))
            except VideoReadError as e:
                self._skip(i, e)
                n = 0
            if self.max_frames is not None:
                n = min(n, self.max_frames)
            counts.append(n)
        self.frame_counts = counts
        self._offsets = np.cumsum([0] + counts)
        if self._offsets[-1] == 0:
            raise DatasetError(f"no readable videos in {self.folder}")

    def _skip(self, i: int, err: Exception) -> None:
        if i not in self.bad:
            self.bad.add(i)
            what = str(err) if str(self.paths[i]) in str(err) else f"{self.paths[i]}: {err}"
            warnings.warn(f"skipping unreadable video: {what}", DataWarning, stacklevel=3)

    def __len__(self) -> int:
        if self.mode == "reconstruction":
            return int(self._offsets[-1])
        n = len(self._ids) if self.id_sampling else self.num_videos
        return n * self.num_repeats

    # -- items ------------------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        if self.mode == "reconstruction":
            return self._reconstruction_item(index)
        return self._train_item(index)

    def _video_for(self, index: int) -> int:
        if self.id_sampling:
            group = self._groups[self._ids[index % len(self._ids)]]
            return group[int(torch.randint(len(group), ()).item())]
        return index % self.num_videos

    def _train_item(self, index: int) -> dict[str, Any]:
        vid = self._video_for(index)
        for attempt in range(self.max_retries + 1):
            if vid not in self.bad:
                try:
                    return self._pair(vid)
                except VideoReadError as e:
                    self._skip(vid, e)
            if len(self.bad) >= self.num_videos:
                break
            # another video, drawn from the torch RNG (seeded per worker by the DataLoader)
            vid = int(torch.randint(self.num_videos, ()).item())
        raise DatasetError(f"no readable video found in {self.folder} after {attempt + 1} tries "
                           f"({len(self.bad)} of {self.num_videos} videos are unreadable)")

    def _pair(self, vid: int) -> dict[str, Any]:
        src = open_video(self.paths[vid])
        n = len(src)
        ids = sorted(int(i) for i in torch.randint(n, (2,)))
        try:
            frames = src.read(ids)
        except VideoReadError:
            if not 0 < len(src) < n:
                raise
            # the container over-stated its frame count: draw again among the frames that decode
            ids = sorted(int(i) for i in torch.randint(len(src), (2,)))
            frames = src.read(ids)
        x = to_tensor(frames, self.image_size, (0.0, 1.0))
        item: dict[str, Any] = {"source": x[0], "driving": x[1], "video": self.names[vid], "frame_ids": tuple(ids)}
        self._add_ground_truth(item, vid, ids, frames.shape[1:3])
        if self.augmentation is not None:
            item = self.augmentation(item)
        for key in ("source", "driving", "driving_target"):  # driving_target: a ScaleAugmentation's target
            if key in item:
                item[key] = from_unit(item[key], self.input_range)
        return item

    def _add_ground_truth(self, item: dict, vid: int, ids: Sequence[int], frame_hw) -> None:
        if self.ground_truth is None:
            return
        gt = self.ground_truth[self.names[vid]]
        dst = self.image_size or tuple(frame_hw)
        for key, i in (("source", ids[0]), ("driving", ids[1])):
            item[f"landmarks_{key}"] = pixels_to_normalized(gt["landmarks"][i], self._gt_size, dst)
            item[f"visible_{key}"] = torch.from_numpy(gt["visible"][i].copy())

    def _reconstruction_item(self, index: int) -> dict[str, Any]:
        vid = int(np.searchsorted(self._offsets, index, side="right") - 1)
        t = index - int(self._offsets[vid])
        frames = self._whole_video(vid)
        x = to_tensor(frames[[0, t]], self.image_size, self.input_range)
        item = {"source": x[0], "driving": x[1], "video": self.names[vid], "frame_ids": (0, t),
                "num_frames": self.frame_counts[vid]}
        self._add_ground_truth(item, vid, (0, t), frames.shape[1:3])
        return item

    def _whole_video(self, vid: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == vid:
            return self._cache[1]
        n = self.frame_counts[vid] if self.mode == "reconstruction" else None
        try:
            frames = open_video(self.paths[vid]).read_all()
        except VideoReadError as e:
            # the video was readable when the dataset was indexed; keep the epoch going with grey frames
            self._skip(vid, e)
            frames = np.full((max(n or 1, 1), *(self.image_size or (64, 64)), 3), 127, np.uint8)
        if n is not None and len(frames) < n:
            warnings.warn(f"video {self.paths[vid]} has {len(frames)} decodable frames, not {n}; repeating its "
                          "last frame", DataWarning, stacklevel=3)
            frames = np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), 0)])
        if n is not None:
            frames = frames[:n]
        self._cache = (vid, frames)
        return frames

    def video_frames(self, vid: int) -> Tensor:
        """All frames of video ``vid`` as (T, 3, H, W) in ``input_range`` (``max_frames`` applies)."""
        frames = open_video(self.paths[vid]).read_all()
        if self.max_frames is not None:
            frames = frames[: self.max_frames]
        return to_tensor(frames, self.image_size, self.input_range)

    def videos(self):
        """Iterate ``(name, frames (T, 3, H, W))`` over the readable videos (skips and warns on broken ones)."""
        for vid, name in enumerate(self.names):
            if vid in self.bad:
                continue
            try:
                yield name, self.video_frames(vid)
            except VideoReadError as e:
                self._skip(vid, e)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, mode={self.mode!r}, "
                f"videos={self.num_videos}, items={len(self)}, image_size={self.image_size}, "
                f"input_range={self.input_range})")


def _build_augmentation(aug):
    if aug is None or callable(aug):
        return aug
    if isinstance(aug, dict):
        cfg = dict(aug)
        cfg.setdefault("type", "PairAugmentation")
        import thkit.datasets.augment  # noqa: F401 - registers PairAugmentation

        return TRANSFORMS.build(cfg)
    raise DatasetError(f"augmentation must be a config dict, a callable or None, got {type(aug).__name__}")


__all__ = [
    "DataWarning",
    "DatasetError",
    "FramesDataset",
    "VideoReadError",
    "VideoSource",
    "list_videos",
    "natural_key",
    "open_video",
    "pixels_to_normalized",
    "read_video",
    "to_tensor",
    "video_stem",
    "write_frames",
    "write_video",
]

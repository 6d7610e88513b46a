"""``thkit eval``: the field's evaluation protocols with the registered metrics.

The protocols are named presets (:mod:`thkit.inference.protocols`, ``thkit eval --list-protocols``); each fixes
the data flow, the motion transfer, the default metrics and their options and where pairs come from.  The data
flows (``EvalProtocol.task``):

* ``video-reconstruction`` (``fomm``, ``reconstruction``; FOMM / TPSMM / MRFA ``--mode reconstruction``): every
  test video animates its own first frame; the driving keypoints are used as they are (absolute), every frame
  (frame 0 included) is generated and compared with the real frame.  One score per frame, mean over all frames
  of all videos.
* ``video-pairs`` (``cross-id``, FOMM ``--mode animate``): the first frame of a source video is animated by
  another video with the recipe's motion transfer (relative motion by default).  Pairs come from a CSV
  (``source``/``driving`` columns, or the first two columns; video names, file names or path tails; a value
  naming a frame file inside a video folder, ``<video>/0000012.png``, uses that frame as the source; the first
  ``num_pairs`` rows whose videos are in the dataset, as FOMM's ``PairedDataset``) or from a seeded sample of
  ``num_pairs`` pairs of videos of *different* identities (the text before the first ``#`` of VoxCeleb names;
  FOMM's own sampler may pair a video with itself).  There is no ground truth: only metrics that compare with
  the source (identity: CSIM, AED, FID against the source as MCC) or with the driving pose (ARD) apply.
* ``frame-pairs`` (``smac``, SMAC's official test): one generated frame per row of a pairs list whose
  ``source`` and ``driving`` columns name frame files (``.../<video>/<frame>.png``, matched by their last two
  path parts); every row must name frames of the dataset (a missing one is an error naming the file and the
  CSV line).

Metrics: by default the protocol's metrics (or every registered metric that applies) whose weights are
available; the others are listed in the report with the reason (the missing file).  Metrics named with
``--metrics`` must run: a missing weights file is then an error.  ``NAME:key=value,...`` passes constructor
options (e.g. ``AKD:backend=mediapipe``, the offline face-mesh backend); they override the protocol's options.
"""
from __future__ import annotations

import ast
import csv
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.errors import ThkitError, suggest
from thkit.inference.errors import InferenceError, InputFileError, MetricSetupError
from thkit.inference.protocols import PROTOCOLS, EvalProtocol, get_protocol
from thkit.value_range import from_unit, to_unit

Tensor = torch.Tensor

__all__ = ["PROTOCOLS", "METRIC_ORDER", "PairRow", "parse_metric_spec", "build_metrics", "sample_pairs",
           "read_pairs", "read_frame_pairs", "evaluate", "summarize", "write_json"]

#: report order of the field's metrics (others follow alphabetically)
METRIC_ORDER = ("L1", "PSNR", "SSIM", "LPIPS", "FID", "AKD", "AED", "CSIM", "ARD")
#: metrics that need the same-identity ground truth (not computable in cross-id)
GROUND_TRUTH_ONLY = frozenset({"L1", "PSNR", "SSIM", "LPIPS", "AKD"})
#: cross-id: how each metric of the field is set up (MCC: AED, CSIM and FID against the source; ARD vs driving)
CROSS_ID_OPTIONS: dict[str, dict[str, Any]] = {k: dict(v) for k, v in PROTOCOLS["cross-id"].metric_options.items()}


# --------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------
def parse_metric_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``'NAME'`` or ``'NAME:key=value,key=value'`` -> ``(NAME, options)`` (values parsed as Python literals
    when they are, else kept as strings)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise MetricSetupError(f"empty metric name in {spec!r}")
    opts: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise MetricSetupError(f"metric option {part!r} in {spec!r} is not key=value")
        try:
            opts[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            opts[key.strip()] = value.strip()
    return name, opts


def _registered() -> dict[str, type]:
    import thkit.metrics  # noqa: F401 - registers the built-in metrics
    from thkit.registry import METRICS

    return dict(METRICS.module_dict)


def _ordered(names: Sequence[str]) -> list[str]:
    rank = {n: i for i, n in enumerate(METRIC_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def _protocol_options(name: str, cls: type, protocol: str | EvalProtocol) -> dict[str, Any] | str:
    """Constructor options a metric gets under ``protocol``, or a string saying why it does not apply."""
    spec = get_protocol(protocol)
    if name in spec.metric_options:
        return dict(spec.metric_options[name])
    if spec.ground_truth:
        return {}
    if name in GROUND_TRUTH_ONLY:
        return f"needs the same-identity ground truth, which the {spec.name} protocol does not have"
    if "source" in getattr(cls, "reference_choices", ()):
        return {"reference": "source"}
    return f"cannot compare with the source ({spec.name} has no ground truth)"


def _short(err: BaseException, name: str = "") -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cut = msg.find(" It is ")  # MissingWeightsError: keep "<file> not found (...)" and drop the long advice
    msg = msg[:cut] if cut > 0 else msg
    if name and msg.startswith(f"{name}: "):
        msg = msg[len(name) + 2:]
    return msg


#: offline alternatives mentioned when a metric's paper backend cannot be built
OFFLINE_HINTS = {
    "AKD": "offline alternative, not comparable with papers: --metrics AKD:backend=mediapipe",
    "ARD": "offline alternative, not comparable with papers: --metrics ARD:backend=mediapipe",
}


def build_metrics(specs: Sequence[str] | None, protocol: str | EvalProtocol, device: str | torch.device = "cpu",
                  input_range: Sequence[float] = (0.0, 1.0)) -> tuple[dict[str, Any], list[str]]:
    """Build the metrics to compute: ``({name: metric}, notes)``.

    ``specs=None``: the protocol's metrics (or every registered metric that applies to it); one that cannot be
    built (a missing weights file or optional package) is left out with a note naming what is missing.  Every
    metric gets the protocol's options for it (:attr:`EvalProtocol.metric_options`), overridden by its own.
    Explicit ``specs``: each must apply and build, else :class:`MetricSetupError` (or the metric's own
    :class:`ThkitError`).
    """
    spec = get_protocol(protocol)
    protocol = spec.name
    registry = _registered()
    explicit = specs is not None
    notes: list[str] = []
    if explicit:
        wanted = [parse_metric_spec(s) for s in specs]
    elif spec.metrics is not None:  # the protocol's metrics (one a plugin was to register may be absent)
        wanted = [(n, {}) for n in _ordered([n for n in spec.metrics if n in registry])]
        notes += [f"{n}: not computed: not a registered metric" for n in spec.metrics if n not in registry]
    else:
        wanted = [(n, {}) for n in _ordered(list(registry))]
    if explicit and not wanted:
        raise MetricSetupError("--metrics names no metric")
    metrics: dict[str, Any] = {}
    for name, opts in wanted:
        if name not in registry:
            raise MetricSetupError(f"unknown metric {name!r}; {suggest(name, registry)}")
        cls = registry[name]
        extra = _protocol_options(name, cls, spec)
        if isinstance(extra, str):
            if explicit:
                raise MetricSetupError(f"metric {name} does not apply to the {protocol} protocol: it {extra}")
            notes.append(f"{name}: not computed: it {extra}")
            continue
        kwargs = {**extra, **opts, "device": device, "input_range": tuple(input_range)}
        try:
            metric = cls(**kwargs)
        except (ThkitError, ImportError) as e:  # a missing weights file, or an optional package a backend needs
            if explicit:
                if isinstance(e, ThkitError):
                    raise
                raise MetricSetupError(str(e).splitlines()[0]) from e
            hint = f" ({OFFLINE_HINTS[name]})" if name in OFFLINE_HINTS else ""
            notes.append(f"{name}: not computed: {_short(e, name)}{hint}")
            continue
        except (TypeError, ValueError) as e:
            raise MetricSetupError(f"metric {name} with options {opts}: {_short(e, name)}") from e
        key = name if name not in metrics else f"{name}:{','.join(f'{k}={v}' for k, v in opts.items())}"
        metrics[key] = metric
    if not metrics:
        na = [n for n, _ in wanted if isinstance(_protocol_options(n, registry[n], spec), str)]
        other = [n for n in notes if n.split(":")[0] not in na]
        why = ([f"{', '.join(na)} do not apply to it"] if na else []) + other
        raise MetricSetupError(f"no metric can run for the {protocol} protocol: " + "; ".join(why))
    return metrics, notes


# --------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------
def _identity(name: str) -> str:
    return name.split("#")[0] if "#" in name else name


def sample_pairs(names: Sequence[str], num_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """``num_pairs`` (source, driving) video index pairs of different identities, drawn without replacement
    with ``numpy.random.RandomState(seed)`` (all of them when there are fewer)."""
    ids = [_identity(n) for n in names]
    cands = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j and ids[i] != ids[j]]
    if not cands:
        raise InferenceError(f"cross-id needs videos of at least two identities; the {len(names)} video(s) share one "
                             "(identities are the text before the first '#' of the video names)")
    rng = np.random.RandomState(seed)
    take = rng.choice(len(cands), size=min(int(num_pairs), len(cands)), replace=False)
    return [cands[k] for k in sorted(take)]


@dataclass(frozen=True)
class PairRow:
    """One pair of a pairs list: its CSV ``line``, the source video and frame, the driving video and frame
    (``driving_frame`` None: every frame of the driving video)."""

    line: int
    source: int
    source_frame: int
    driving: int
    driving_frame: int | None = None


class _Videos:
    """Look pairs-list values up among the dataset's videos (``paths``: also check that frame files exist)."""

    def __init__(self, names: Sequence[str], paths: Sequence[Path] | None = None):
        from thkit.datasets.frames import video_stem

        self.names = list(names)
        self.paths = None if paths is None else [Path(q) for q in paths]
        self.stems = {video_stem(n): i for i, n in enumerate(names)}
        self._frames: dict[int, tuple[dict[str, int] | None, int]] = {}

    def _frame_list(self, vid: int) -> tuple[dict[str, int] | None, int]:
        """({frame file name: index} of a folder video, else None; number of frames)."""
        from thkit.datasets.frames import FolderSource, open_video

        if vid not in self._frames:
            src = open_video(self.paths[vid])
            files = {f.name: i for i, f in enumerate(src.files)} if isinstance(src, FolderSource) else None
            self._frames[vid] = (files, len(src))
        return self._frames[vid]

    def match(self, value: str) -> tuple[int, int | None, str | None] | None:
        """``value`` -> ``(video, frame or None when it names a whole video, problem or None)``, or None when
        it names no video of the dataset.  A frame is named by its file (``<video>/<frame>.png``, the last two
        path parts); ``problem`` says why that frame does not exist."""
        from thkit.datasets.frames import IMAGE_EXTENSIONS, video_stem

        parts = [q for q in value.strip().replace("\\", "/").split("/") if q]
        if not parts:
            return None
        last = parts[-1]
        if last.lower().endswith(IMAGE_EXTENSIONS) and len(parts) > 1 and video_stem(parts[-2]) in self.stems:
            vid = self.stems[video_stem(parts[-2])]
            stem = Path(last).stem
            if self.paths is None:
                return vid, int(stem) if stem.isdigit() else 0, None
            files, count = self._frame_list(vid)
            if files is not None:
                if last in files:
                    return vid, files[last], None
                names = list(files)
                return vid, None, (f"{self.paths[vid]} has no frame file {last} (it has {count}: {names[0]} ... "
                                   f"{names[-1]})")
            if stem.isdigit() and int(stem) < count:
                return vid, int(stem), None
            return vid, None, f"{self.paths[vid]} has no frame {last} (it has {count} frames, 0 ... {count - 1})"
        key = video_stem(parts[-1])
        if key in self.stems:
            return self.stems[key], None, None
        return None


def _csv_rows(path: str | os.PathLike) -> tuple[Path, list[tuple[int, list[str]]]]:
    """The non-blank rows of a CSV file with their line numbers; one-line errors naming the file and line."""
    import io

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"pairs list {p} does not exist")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputFileError(f"cannot read pairs list {p}: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputFileError(f"pairs list {p} line {line}: not UTF-8 text (byte {data[e.start]:#04x}); expected a "
                             "CSV with source and driving columns") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise InputFileError(f"pairs list {p} line {reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise InputFileError(f"pairs list {p} is empty (expected a source,driving header and one row per pair)")
    return p, rows


def _pair_rows(path: str | os.PathLike, names: Sequence[str], paths: Sequence[Path] | None, *, frames: bool,
               strict: bool, limit: int | None = None) -> tuple[Path, list[PairRow], int]:
    """Read a pairs list: ``(path, rows, skipped)``.

    ``frames``: both values must name frame files (``<video>/<frame>.png``); else the driving value names a
    video (a frame value counts for its video) and a source video means its frame 0.  ``strict``: a value that
    names no video of the dataset is an error; else the row is skipped (FOMM's ``PairedDataset`` keeps the rows
    whose videos are in the dataset) and counted.  ``limit``: keep the first rows only.
    """
    p, rows = _csv_rows(path)
    videos = _Videos(names, paths)
    header_line, first = rows[0]
    header = [c.strip().lower() for c in first]
    if "source" in header and "driving" in header:
        si, di = header.index("source"), header.index("driving")
        rows = rows[1:]
    elif frames:
        raise InputFileError(f"pairs list {p} line {header_line}: expected a header naming the 'source' and "
                             f"'driving' columns (the official format: source,driving,frame), got {','.join(first)!r}")
    else:
        si, di = 0, 1
        if len(first) < 2:
            raise InputFileError(f"pairs list {p} line {header_line}: expected 'source' and 'driving' columns (or two "
                                 f"columns), got {len(first)} column")
        if videos.match(first[0]) is None and videos.match(first[1]) is None:
            rows = rows[1:]  # an unknown header
    out, skipped = [], 0
    for line, r in rows:
        if len(r) <= max(si, di):
            raise InputFileError(f"pairs list {p} line {line}: {len(r)} column(s), expected at least "
                                 f"{max(si, di) + 1} (source and driving)")
        got = []
        for what, value in (("source", r[si]), ("driving", r[di])):
            if not value.strip():
                raise InputFileError(f"pairs list {p} line {line}: the {what} value is empty")
            m = videos.match(value)
            if m is None:
                if strict:
                    folder = Path(paths[0]).parent if paths else "the dataset"
                    raise InputFileError(f"pairs list {p} line {line}: {what} {value.strip()!r} names no video of "
                                         f"{folder} (e.g. {names[0]!r}); the file is missing")
                got = None
                break
            vid, frame, problem = m
            if problem is not None and (frames or what == "source"):
                raise InputFileError(f"pairs list {p} line {line}: {what} frame {value.strip()!r} is missing: "
                                     f"{problem}")
            if frames and frame is None:
                raise InputFileError(f"pairs list {p} line {line}: {what} {value.strip()!r} names a whole video; this "
                                     "protocol pairs frames (<video>/<frame file>, as DaGAN's vox_evaluation.csv)")
            got.append((vid, frame))
        if got is None:
            skipped += 1
            continue
        (s, sf), (d, df) = got
        out.append(PairRow(line, s, sf or 0, d, df if frames else None))
    if limit is not None:
        out = out[: int(limit)]
    if not out:
        raise InputFileError(f"pairs list {p}: none of its {len(rows)} pairs names videos of the dataset "
                             f"(e.g. {rows[0][1][si]!r}; the dataset has e.g. {names[0]!r})" if rows else
                             f"pairs list {p} has a header but no pairs")
    return p, out, skipped


def read_pairs(path: str | os.PathLike, names: Sequence[str], paths: Sequence[Path] | None = None,
               limit: int | None = None) -> tuple[list[tuple[int, int, int]], int]:
    """Video pairs from a CSV (the ``video-pairs`` flow): ``[(source video, source frame, driving video)]`` and
    the number of rows skipped because a name is not in the dataset.  With ``paths`` (the videos' files), a
    source frame file that does not exist is an error naming the CSV line; ``limit``: the first rows only."""
    _, rows, skipped = _pair_rows(path, names, paths, frames=False, strict=False, limit=limit)
    return [(r.source, r.source_frame, r.driving) for r in rows], skipped


def read_frame_pairs(path: str | os.PathLike, names: Sequence[str], paths: Sequence[Path],
                     limit: int | None = None) -> list[PairRow]:
    """Frame pairs from a CSV (the ``frame-pairs`` flow, SMAC's ``FramesMotionTransferTestDataset_PairsList``):
    a header naming ``source`` and ``driving`` columns (others, e.g. ``frame`` or ``anchor``, are ignored), and
    per row two frame files ``.../<video>/<frame>.png`` matched by their last two path parts (the official lists
    hold absolute paths of the authors' machines).  Every value must name an existing frame of the dataset:
    anything else is an :class:`InputFileError` naming the file and the CSV line."""
    return _pair_rows(path, names, paths, frames=True, strict=True, limit=limit)[1]


def _frame_batches(path: Path, size: int, batch: int, max_frames: int | None) -> Iterator[Tensor]:
    """The frames of one video (folder of images or video file), resized, as (B, 3, S, S) in [0, 1]."""
    from thkit.datasets.frames import open_video, to_tensor
    from thkit.inference.video import iter_frames

    if path.is_dir() or path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
        src = open_video(path)
        n = len(src) if max_frames is None else min(len(src), max_frames)
        for s in range(0, n, batch):
            yield to_tensor(src.read(list(range(s, min(n, s + batch)))), (size, size), (0.0, 1.0))
        return
    buf = []
    for f in iter_frames(path, max_frames, what="video"):
        buf.append(f)
        if len(buf) == batch:
            yield to_tensor(np.stack(buf), (size, size), (0.0, 1.0))
            buf = []
    if buf:
        yield to_tensor(np.stack(buf), (size, size), (0.0, 1.0))


def _frame(path: Path, index: int, size: int) -> Tensor:
    from thkit.datasets.frames import open_video, to_tensor

    src = open_video(path)
    return to_tensor(src.read([index]), (size, size), (0.0, 1.0))[0]


# --------------------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------------------
def _save_png(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    from thkit.fileio import atomic_write

    atomic_write(path, lambda f: Image.fromarray(frame).save(f, format="PNG"))


def evaluate(model: torch.nn.Module, data: str | os.PathLike, protocol: str | EvalProtocol, metrics: dict[str, Any],
             image_size: int, input_range: Sequence[float] = (0.0, 1.0), split: str = "test",
             motion: dict[str, bool] | None = None, pairs: str | os.PathLike | None = None,
             num_pairs: int | None = None, seed: int = 0, num_videos: int | None = None,
             max_frames: int | None = None, batch_size: int = 4, device: str | torch.device = "cpu",
             progress: bool = True, save_videos: str | os.PathLike | None = None, fps: float = 25.0) -> dict[str, Any]:
    """Run ``protocol`` (a name of :data:`~thkit.inference.protocols.PROTOCOLS` or an
    :class:`~thkit.inference.protocols.EvalProtocol`) on the dataset and feed ``metrics``; returns the summary
    (without the metric values, which :func:`summarize` adds).

    ``motion``: the recipe's motion transfer, used by protocols that take it from the recipe (``cross-id``);
    the others fix their own.  ``num_pairs``: ``None`` takes the protocol's default.  ``save_videos``: a folder
    for the generated videos (one PNG per pair for frame-pair protocols).
    """
    from tqdm import tqdm

    from thkit.datasets.frames import FramesDataset
    from thkit.inference.stream import StreamingAnimator

    spec = get_protocol(protocol)
    spec.check_pairs(pairs)
    device = torch.device(device)
    lo, hi = (float(v) for v in input_range)
    ds = FramesDataset(data, split=split, mode="reconstruction", image_size=image_size, num_videos=num_videos,
                       max_frames=max_frames, ground_truth=None)
    good = [i for i in range(ds.num_videos) if i not in ds.bad and ds.frame_counts[i] > 0]
    names = [ds.names[i] for i in good]
    paths = [ds.paths[i] for i in good]
    n_pairs = spec.num_pairs if num_pairs is None else int(num_pairs)
    if n_pairs is not None and n_pairs < 1:
        raise InferenceError(f"--num-pairs must be >= 1, got {n_pairs}")
    skipped_pairs = 0
    # jobs: (source video, source frame, driving video, driving frame or None for the whole video, CSV line)
    if spec.task == "video-reconstruction":
        jobs = [(i, 0, i, None, None) for i in good]
    elif spec.task == "video-pairs":
        if pairs is not None:
            got, skipped_pairs = read_pairs(pairs, names, paths, limit=n_pairs)
            jobs = [(good[s], f, good[d], None, None) for s, f, d in got]
        else:
            jobs = [(good[s], 0, good[d], None, None) for s, d in sample_pairs(names, n_pairs or 50, seed)]
    else:
        rows = read_frame_pairs(pairs, names, paths, limit=n_pairs)
        jobs = [(good[r.source], r.source_frame, good[r.driving], r.driving_frame, r.line) for r in rows]
    if spec.motion is not None:
        motion = dict(spec.motion)
    else:
        motion = dict(motion or dict(relative=True, relative_jacobian=True, adapt_movement_scale=False))
    animator = StreamingAnimator(model, batch_size=batch_size, pass_driving=spec.pass_driving, **motion)
    total = sum(ds.frame_counts[d] if df is None else 1 for _, _, d, df, _ in jobs)
    bar = tqdm(total=total, unit="frame", desc=f"eval {spec.name}", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    frames = 0
    t0 = time.perf_counter()
    save_dir = Path(save_videos) if save_videos else None
    current = None
    try:
        for s_vid, s_frame, d_vid, d_frame, line in jobs:
            if current != (s_vid, s_frame):
                src = _frame(ds.paths[s_vid], s_frame, image_size).unsqueeze(0)
                animator.set_source(from_unit(src, (lo, hi)).to(device))
                current = (s_vid, s_frame)
            else:
                animator.reset_driving()  # the same source (cached), a new driving video
            if spec.task == "video-reconstruction":
                label = ds.names[d_vid]
            elif d_frame is None:
                label = f"{ds.names[s_vid]}->{ds.names[d_vid]}"
            else:
                label = f"{ds.names[s_vid]}#f{s_frame}->{ds.names[d_vid]}#f{d_frame}"
            safe = label.replace("/", "_").replace("->", "__")
            writer = None
            if save_dir is not None and d_frame is None:
                from thkit.inference.video import VideoWriter

                writer = VideoWriter(save_dir / f"{safe}.mp4", fps, image_size, image_size)
            if d_frame is None:
                batches = _frame_batches(ds.paths[d_vid], image_size, batch_size, ds.frame_counts[d_vid])
            else:
                batches = iter([_frame(ds.paths[d_vid], d_frame, image_size).unsqueeze(0)])
            try:
                for drv in batches:
                    pred = animator.step(from_unit(drv, (lo, hi)).to(device))
                    pred01 = to_unit(pred, (lo, hi)).clamp(0, 1)
                    drv = drv.to(device)
                    for m in metrics.values():
                        m.update(pred01, drv, source=src.to(device), video=label if d_frame is None else None)
                    if save_dir is not None:
                        out8 = pred01.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                        if writer is not None:
                            for f in out8:
                                writer.write(f)
                        else:
                            _save_png(save_dir / f"line{line:06d}_{safe}.png", out8[0])
                    frames += drv.shape[0]
                    bar.update(drv.shape[0])
                if writer is not None:
                    writer.close()
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
    finally:
        bar.close()
    notes = list(spec.not_paper_exact)
    if spec.image_size is not None and int(image_size) != spec.image_size:
        notes.insert(0, f"evaluated at {image_size} px; the {spec.name} protocol is defined at {spec.image_size} px")
    return {
        "protocol": spec.name,
        "protocol_definition": spec.as_dict(),
        "data": str(data),
        "split": split,
        "videos": len(good),
        "unreadable_videos": sorted(str(ds.paths[i]) for i in ds.bad),
        "items": len(jobs),
        "pairs_skipped": skipped_pairs,
        "frames": frames,
        "image_size": image_size,
        "motion_transfer": motion,
        "not_paper_exact": notes,
        "seconds": time.perf_counter() - t0,
    }


def summarize(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``compute()`` of every metric (a metric whose computation fails reports its error instead)."""
    out = {}
    for name, m in metrics.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = m.compute()
            except Exception as e:  # noqa: BLE001 - e.g. FID on too few frames
                res = {"value": None, "error": _short(e)}
        res = {k: v for k, v in res.items()}
        if caught:
            res["warnings"] = [str(w.message) for w in caught]
        out[name] = res
    return out


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write strictly valid JSON atomically (:func:`thkit.checkpoint.atomic_write`); values are made JSON-safe by
    :func:`thkit.metrics.report.to_jsonable` (NaN -> null, inf -> "inf")."""
    from thkit.checkpoint import atomic_write
    from thkit.inference.video import _default_permissions
    from thkit.metrics.report import to_jsonable

    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    path = atomic_write(path, lambda f: f.write(text), mode="w")
    _default_permissions(path)
    return path

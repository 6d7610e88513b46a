"""``thkit eval``: the field's evaluation protocols with the registered metrics.

Protocols (see ``shared/notes/metrics-data.md`` §1.3):

* ``reconstruction`` (FOMM / TPSMM / MRFA ``--mode reconstruction``): every test video animates its own first
  frame; the driving keypoints are used as they are (absolute), every frame (frame 0 included) is generated
  and compared with the real frame.  One score per frame, mean over all frames of all videos.
* ``cross-id`` (FOMM ``--mode animate``): the first frame of a source video is animated by another video with
  the recipe's motion transfer (relative motion by default).  Pairs come from a CSV (``source``/``driving``
  columns, or the first two columns; video names, file names or path tails; a value naming a frame file inside
  a video folder, ``<video>/0000012.png``, uses that frame as the source) or from a seeded sample of
  ``num_pairs`` pairs of videos of *different* identities (the text before the first ``#`` of VoxCeleb names;
  FOMM's own sampler may pair a video with itself).  There is no ground truth: only metrics that compare with
  the source (identity: CSIM, AED, FID against the source as MCC) or with the driving pose (ARD) apply.

Metrics: by default every registered metric that applies to the protocol and whose weights are available;
the others are listed in the report with the reason (the missing file).  Metrics named with ``--metrics``
must run: a missing weights file is then an error.  ``NAME:key=value,...`` passes constructor options (e.g.
``AKD:backend=mediapipe``, the offline face-mesh backend).
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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.errors import ThkitError, suggest
from thkit.inference.errors import InferenceError, InputFileError, MetricSetupError
from thkit.value_range import from_unit, to_unit

Tensor = torch.Tensor

__all__ = ["PROTOCOLS", "METRIC_ORDER", "parse_metric_spec", "build_metrics", "sample_pairs", "read_pairs",
           "evaluate", "summarize", "write_json"]

PROTOCOLS = ("reconstruction", "cross-id")
#: report order of the field's metrics (others follow alphabetically)
METRIC_ORDER = ("L1", "PSNR", "SSIM", "LPIPS", "FID", "AKD", "AED", "CSIM", "ARD")
#: metrics that need the same-identity ground truth (not computable in cross-id)
GROUND_TRUTH_ONLY = frozenset({"L1", "PSNR", "SSIM", "LPIPS", "AKD"})
#: cross-id: how each metric of the field is set up (MCC: AED, CSIM and FID against the source; ARD vs driving)
CROSS_ID_OPTIONS: dict[str, dict[str, Any]] = {"AED": {"reference": "source"}, "CSIM": {"reference": "source"},
                                               "FID": {"reference": "source"}, "ARD": {}}


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


def _protocol_options(name: str, cls: type, protocol: str) -> dict[str, Any] | str:
    """Constructor options a metric needs under ``protocol``, or a string saying why it does not apply."""
    if protocol == "reconstruction":
        return {}
    if name in CROSS_ID_OPTIONS:
        return dict(CROSS_ID_OPTIONS[name])
    if name in GROUND_TRUTH_ONLY:
        return "needs the same-identity ground truth, which the cross-id protocol does not have"
    if "source" in getattr(cls, "reference_choices", ()):
        return {"reference": "source"}
    return "cannot compare with the source (cross-id has no ground truth)"


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


def build_metrics(specs: Sequence[str] | None, protocol: str, device: str | torch.device = "cpu",
                  input_range: Sequence[float] = (0.0, 1.0)) -> tuple[dict[str, Any], list[str]]:
    """Build the metrics to compute: ``({name: metric}, notes)``.

    ``specs=None``: every registered metric that applies to ``protocol``; one that cannot be built (a missing
    weights file or optional package) is left out with a note naming what is missing.  Explicit ``specs``:
    each must apply and build, else :class:`MetricSetupError` (or the metric's own :class:`ThkitError`).
    """
    if protocol not in PROTOCOLS:
        raise InferenceError(f"unknown protocol {protocol!r} (use {', '.join(PROTOCOLS)})")
    registry = _registered()
    explicit = specs is not None
    wanted = [parse_metric_spec(s) for s in specs] if explicit else [(n, {}) for n in _ordered(list(registry))]
    if explicit and not wanted:
        raise MetricSetupError("--metrics names no metric")
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    for name, opts in wanted:
        if name not in registry:
            raise MetricSetupError(f"unknown metric {name!r}; {suggest(name, registry)}")
        cls = registry[name]
        extra = _protocol_options(name, cls, protocol)
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
        na = [n for n, _ in wanted if isinstance(_protocol_options(n, registry[n], protocol), str)]
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


def _match(value: str, names: Sequence[str], stems: dict[str, int]) -> tuple[int, int] | None:
    """A pairs-list value -> (video index, frame index) or None."""
    from thkit.datasets.frames import IMAGE_EXTENSIONS, video_stem

    value = value.strip().replace("\\", "/").rstrip("/")
    parts = [p for p in value.split("/") if p]
    if not parts:
        return None
    frame = 0
    last = parts[-1]
    if last.lower().endswith(IMAGE_EXTENSIONS) and len(parts) > 1 and video_stem(parts[-2]) in stems:
        stem = Path(last).stem
        frame = int(stem) if stem.isdigit() else 0
        parts = parts[:-1]
    key = video_stem(parts[-1])
    if key in stems:
        return stems[key], frame
    return None


def read_pairs(path: str | os.PathLike, names: Sequence[str]) -> tuple[list[tuple[int, int, int]], int]:
    """Pairs from a CSV: ``[(source video, source frame, driving video)]`` and the number of rows skipped
    because a name is not in the dataset."""
    from thkit.datasets.frames import video_stem

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"pairs list {p} does not exist")
    stems = {video_stem(n): i for i, n in enumerate(names)}
    try:
        rows = list(csv.reader(p.read_text().splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputFileError(f"cannot read pairs list {p}: {e}") from e
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputFileError(f"pairs list {p} is empty")
    header = [c.strip().lower() for c in rows[0]]
    if "source" in header and "driving" in header:
        si, di = header.index("source"), header.index("driving")
        rows = rows[1:]
    else:
        si, di = 0, 1
        if len(header) < 2:
            raise InputFileError(f"pairs list {p}: expected 'source' and 'driving' columns (or two columns)")
        if _match(rows[0][0], names, stems) is None and _match(rows[0][1], names, stems) is None:
            rows = rows[1:]  # an unknown header
    out, skipped = [], 0
    for r in rows:
        if len(r) <= max(si, di):
            raise InputFileError(f"pairs list {p}: row {r} has fewer than {max(si, di) + 1} columns")
        s, d = _match(r[si], names, stems), _match(r[di], names, stems)
        if s is None or d is None:
            skipped += 1
            continue
        out.append((s[0], s[1], d[0]))
    if not out:
        raise InputFileError(f"pairs list {p}: none of its {len(rows)} pairs names videos of the dataset "
                             f"(e.g. {rows[0][si]!r}; the dataset has e.g. {names[0]!r})")
    return out, skipped


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
def evaluate(model: torch.nn.Module, data: str | os.PathLike, protocol: str, metrics: dict[str, Any],
             image_size: int, input_range: Sequence[float] = (0.0, 1.0), split: str = "test",
             motion: dict[str, bool] | None = None, pairs: str | os.PathLike | None = None, num_pairs: int = 50,
             seed: int = 0, num_videos: int | None = None, max_frames: int | None = None, batch_size: int = 4,
             device: str | torch.device = "cpu", progress: bool = True,
             save_videos: str | os.PathLike | None = None, fps: float = 25.0) -> dict[str, Any]:
    """Run ``protocol`` on the dataset and feed ``metrics``; returns the summary (without the metric values,
    which :func:`summarize` adds)."""
    from tqdm import tqdm

    from thkit.datasets.frames import FramesDataset
    from thkit.inference.stream import StreamingAnimator

    if protocol not in PROTOCOLS:
        raise InferenceError(f"unknown protocol {protocol!r} (use {', '.join(PROTOCOLS)})")
    device = torch.device(device)
    lo, hi = (float(v) for v in input_range)
    ds = FramesDataset(data, split=split, mode="reconstruction", image_size=image_size, num_videos=num_videos,
                       max_frames=max_frames, ground_truth=None)
    good = [i for i in range(ds.num_videos) if i not in ds.bad and ds.frame_counts[i] > 0]
    if protocol == "reconstruction":
        jobs = [(i, 0, i) for i in good]
        skipped_pairs = 0
        motion = dict(relative=False, relative_jacobian=False, adapt_movement_scale=False)
    else:
        names = [ds.names[i] for i in good]
        if pairs is not None:
            got, skipped_pairs = read_pairs(pairs, names)
            jobs = [(good[s], f, good[d]) for s, f, d in got]
        else:
            jobs = [(good[s], 0, good[d]) for s, d in sample_pairs(names, num_pairs, seed)]
            skipped_pairs = 0
        motion = dict(motion or dict(relative=True, relative_jacobian=True, adapt_movement_scale=False))
    animator = StreamingAnimator(model, batch_size=batch_size, pass_driving=protocol == "reconstruction", **motion)
    total = sum(ds.frame_counts[d] for _, _, d in jobs)
    bar = tqdm(total=total, unit="frame", desc=f"eval {protocol}", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    frames = 0
    t0 = time.perf_counter()
    save_dir = Path(save_videos) if save_videos else None
    try:
        for s_vid, s_frame, d_vid in jobs:
            src = _frame(ds.paths[s_vid], s_frame, image_size).unsqueeze(0)
            animator.set_source(from_unit(src, (lo, hi)).to(device))
            label = ds.names[d_vid] if protocol == "reconstruction" else f"{ds.names[s_vid]}->{ds.names[d_vid]}"
            writer = None
            if save_dir is not None:
                from thkit.inference.video import VideoWriter

                safe = label.replace("/", "_").replace("->", "__")
                writer = VideoWriter(save_dir / f"{safe}.mp4", fps, image_size, image_size)
            try:
                for drv in _frame_batches(ds.paths[d_vid], image_size, batch_size, ds.frame_counts[d_vid]):
                    pred = animator.step(from_unit(drv, (lo, hi)).to(device))
                    pred01 = to_unit(pred, (lo, hi)).clamp(0, 1)
                    drv = drv.to(device)
                    for m in metrics.values():
                        m.update(pred01, drv, source=src.to(device), video=label)
                    if writer is not None:
                        for f in pred01.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy():
                            writer.write(f)
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
    return {
        "protocol": protocol,
        "data": str(data),
        "split": split,
        "videos": len(good),
        "unreadable_videos": sorted(str(ds.paths[i]) for i in ds.bad),
        "items": len(jobs),
        "pairs_skipped": skipped_pairs,
        "frames": frames,
        "image_size": image_size,
        "motion_transfer": motion,
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

"""``thkit animate``: a source image animated by a driving video, written as a video file.

Pipeline (three threads): a reader thread decodes the driving video with PyAV, crops and resizes each frame
to the model size (bounded queue); the main thread runs :class:`~thkit.inference.stream.StreamingAnimator`
(source cached once, frames in batches); a writer thread encodes the results (bounded queue) into a
temporary file next to the output, with the driving video's audio, and renames it at the end.  Any error
removes the temporary file, so the output path only ever holds a complete video.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.inference.errors import InferenceError, InputFileError, existing_file
from thkit.value_range import from_unit, to_unit

Tensor = torch.Tensor

__all__ = ["resolve_device", "read_image", "animate_video", "AnimateResult", "motion_settings",
           "animation_mode_network"]

#: animation modes every recipe has: relative motion transfer and absolute keypoints (the official demos' 'standard')
BUILTIN_MODES = ("relative", "absolute", "standard")


# --------------------------------------------------------------------------------------------------------
# model and device
# --------------------------------------------------------------------------------------------------------
def resolve_device(name: str | None) -> torch.device:
    """``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'`` or ``'cuda:N'``."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InferenceError(f"--device {name}: CUDA is not available here (torch.cuda.is_available() is False); "
                                 "use --device cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InferenceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return dev
    raise InferenceError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")


def motion_settings(cfg, relative: bool | None = None, adapt_scale: bool | None = None,
                    relative_jacobian: bool | None = None) -> dict[str, bool]:
    """The recipe's ``motion_transfer`` (FOMM's animate defaults when it has none), with overrides."""
    base = dict(relative=True, relative_jacobian=True, adapt_movement_scale=False)
    mt = cfg.get("motion_transfer") or {}
    base.update({k: bool(v) for k, v in dict(mt).items() if k in base})
    if relative is not None:
        base["relative"] = bool(relative)
    if adapt_scale is not None:
        base["adapt_movement_scale"] = bool(adapt_scale)
    if relative_jacobian is not None:
        base["relative_jacobian"] = bool(relative_jacobian)
    return base


def animation_mode_network(model: torch.nn.Module, mode: str, checkpoint: str | os.PathLike | None = None,
                           checkpoint_format: str = "auto", trusted: bool = False) -> torch.nn.Module:
    """The keypoint-transfer network of an animation mode that the model's recipe defines, with its weights.

    A recipe names its extra modes in ``animation_modes``: ``{mode: dict(keypoint_transfer=NAME, kind='motion')}``,
    where ``NAME`` is a top-level recipe entry (the network's config) and ``kind`` the registry it is built from.
    The network maps ``(kp_source, kp_driving)`` to the keypoints to animate with, in place of relative motion
    transfer; its weights are the entry ``NAME`` of the model's checkpoint (``checkpoint``, default the one the
    model was loaded from: ``model.meta['weights']``).  Returned in eval mode on the model's device.
    """
    from thkit.builder import build
    from thkit.checkpoint import load_state_dict_strict, read_state_dicts
    from thkit.errors import CheckpointError

    cfg = getattr(model, "recipe", None)
    modes = dict((cfg.get("animation_modes") or {}) if cfg is not None else {})
    if mode not in modes:
        have = ", ".join([*BUILTIN_MODES, *modes]) if cfg is not None else ", ".join(BUILTIN_MODES)
        raise InferenceError(f"animation mode {mode!r} is not one of this recipe's modes ({have})")
    spec = dict(modes[mode])
    name = spec.get("keypoint_transfer")
    if not name or cfg.get(name) is None:
        raise InferenceError(f"animation mode {mode!r}: the recipe's animation_modes.{mode}.keypoint_transfer must "
                             f"name a network config of the recipe, got {name!r}")
    weights = checkpoint if checkpoint is not None else (getattr(model, "meta", {}) or {}).get("weights")
    if weights is None:
        raise InferenceError(f"animation mode {mode!r} needs the trained {name!r} network: pass --checkpoint with "
                             f"its weights")
    net = build(spec.get("kind", "motion"), cfg[name], path=name)
    sds = read_state_dicts(weights, checkpoint_format, trusted)
    if name not in sds:
        raise CheckpointError(f"checkpoint {weights} has no {name!r} weights (has: {', '.join(sds)}), which animation "
                              f"mode {mode!r} needs; use a checkpoint trained with that network, or --mode relative")
    load_state_dict_strict(net, sds[name], name)
    param = next(model.parameters(), None)
    return net.to(param.device if param is not None else "cpu").eval()


# --------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, what: str = "source image") -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (alpha dropped, grey expanded)."""
    from PIL import Image, UnidentifiedImageError

    p = existing_file(path, what, "an image file")
    try:
        with Image.open(p) as im:
            return np.array(im.convert("RGB"))
    except UnidentifiedImageError as e:
        raise InputFileError(f"cannot read {what} {p}: not an image format Pillow reads") from e
    except OSError as e:
        raise InputFileError(f"cannot read {what} {p}: {e}") from e


def _prepare(image: np.ndarray, box: tuple[int, int, int] | None, size: int) -> Tensor:
    """Crop (optional), resize (antialiased bilinear) to ``size`` x ``size``: (3, size, size) float in [0, 1]."""
    from thkit.datasets.frames import to_tensor
    from thkit.inference.face import crop

    if box is not None:
        image = crop(image, box)
    return to_tensor(image[None], (size, size), (0.0, 1.0))[0]


def _to_uint8(x: Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) float in [0, 1] -> (B, H, W, 3) / (H, W, 3) uint8 (rounded, clipped)."""
    x = x.detach().float().clamp(0, 1).mul(255).round_().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


# --------------------------------------------------------------------------------------------------------
# the command's work
# --------------------------------------------------------------------------------------------------------
@dataclass
class AnimateResult:
    """What :func:`animate_video` did."""

    path: Path
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height) of the written frames
    seconds: float
    audio: str  # 'copied', 'transcoded (codec -> ...)', 'none in the driving video' or 'disabled'
    crop: dict[str, Any] = field(default_factory=dict)
    motion: dict[str, bool] = field(default_factory=dict)

    @property
    def fps_compute(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def animate_video(
    model: torch.nn.Module,
    source: str | os.PathLike | np.ndarray,
    driving: str | os.PathLike,
    out: str | os.PathLike,
    image_size: int,
    input_range: tuple[float, float] = (0.0, 1.0),
    relative: bool = True,
    relative_jacobian: bool = True,
    adapt_movement_scale: bool = False,
    crop: bool = False,
    crop_scale: float = 1.8,
    crop_frames: int = 10,
    face_detector: str = "auto",
    side_by_side: bool = False,
    audio: bool = True,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    max_frames: int | None = None,
    crf: int = 18,
    queue_size: int | None = None,
    keypoint_transfer: torch.nn.Module | None = None,
) -> AnimateResult:
    """Animate ``source`` (an image file or an (H, W, 3) uint8 array) with the driving video and write ``out``.

    The output has the driving video's frame rate and audio; its frames are ``image_size`` square (three
    side by side with ``side_by_side``: source | driving | result).  See the module docstring for the
    threads and the atomic write.  ``keypoint_transfer`` (:func:`animation_mode_network`): a network that maps
    ``(kp_source, kp_driving)`` to the keypoints to animate with, in place of motion transfer.
    """
    from tqdm import tqdm

    from thkit.inference.face import FaceDetector, find_crop, quiet_native_stderr
    from thkit.inference.stream import StreamingAnimator, resolve_batch_size
    from thkit.inference.video import BackgroundIterator, VideoWriter, iter_frames, map_frames, probe_video

    device = torch.device(device)
    batch_size = resolve_batch_size(batch_size, device)
    size = int(image_size)
    if size < 8:
        raise InferenceError(f"image size {size} is too small")
    if max_frames is not None and max_frames < 1:
        raise InferenceError(f"--max-frames must be >= 1, got {max_frames}")
    out = Path(out)
    # check every input before any work
    src_img = read_image(source) if not isinstance(source, np.ndarray) else np.ascontiguousarray(source)
    info = probe_video(driving, what="driving video")
    n_total = info.num_frames if max_frames is None else min(max_frames, info.num_frames or max_frames)

    crop_info: dict[str, Any] = {}
    src_box = drv_box = None
    if crop:
        with quiet_native_stderr(), FaceDetector(face_detector) as det:  # MediaPipe's graph threads log to fd 2
            label = "the source image" + ("" if isinstance(source, np.ndarray) else f" {source}")
            src_box, _ = find_crop(det, [src_img], label, crop_scale)
            first = list(iter_frames(driving, max_frames=max(1, int(crop_frames)), what="driving video"))
            drv_box, hits = find_crop(det, first, f"the driving video {driving}", crop_scale)
            crop_info = {"detector": det.backend, "source_box": src_box, "driving_box": drv_box,
                         "driving_frames_checked": len(first), "driving_frames_with_face": hits}

    src_unit = _prepare(src_img, src_box, size)
    src_u8 = _to_uint8(src_unit)
    width = 3 * size if side_by_side else size
    pin = device.type == "cuda"

    def prep(frame: np.ndarray) -> Tensor:
        t = _prepare(frame, drv_box, size)
        return t.pin_memory() if pin else t

    animator = StreamingAnimator(model, relative=relative, relative_jacobian=relative_jacobian,
                                 adapt_movement_scale=adapt_movement_scale, batch_size=batch_size,
                                 keypoint_transfer=keypoint_transfer)
    audio_from = driving if (audio and info.has_audio) else None
    qsize = queue_size or max(8, 2 * batch_size)
    writer = VideoWriter(out, info.fps, width, size, audio_from=audio_from, crf=crf, queue_size=qsize)
    reader = None
    bar = tqdm(total=n_total, unit="frame", desc=f"animate {Path(driving).name}", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    count = 0
    try:
        animator.set_source(from_unit(src_unit, input_range).unsqueeze(0).to(device))
        reader = BackgroundIterator(map_frames(prep, iter_frames(driving, max_frames, what="driving video")),
                                    maxsize=qsize, name="thkit-reader")
        batch: list[Tensor] = []

        def flush() -> None:
            nonlocal count
            drv = torch.stack(batch).to(device, non_blocking=pin)
            pred = animator.step(from_unit(drv, input_range))
            res = _to_uint8(to_unit(pred, input_range))
            drv_u8 = _to_uint8(drv) if side_by_side else None
            for i in range(len(batch)):
                frame = np.concatenate([src_u8, drv_u8[i], res[i]], axis=1) if side_by_side else res[i]
                writer.write(frame)
            count += len(batch)
            bar.update(len(batch))
            batch.clear()

        for frame in reader:
            batch.append(frame)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if reader is not None:
            reader.close()
        bar.close()
    seconds = time.perf_counter() - t0
    if audio_from is None:
        audio_state = "disabled" if not audio else "none in the driving video"
    else:
        audio_state = ("copied" if writer.audio_copied
                       else f"transcoded ({writer.audio_codec} is not accepted by {out.suffix})")
    return AnimateResult(path=out, frames=count, fps=float(info.fps), size=(width, size), seconds=seconds,
                         audio=audio_state, crop=crop_info,
                         motion=dict(relative=relative, relative_jacobian=relative_jacobian,
                                     adapt_movement_scale=adapt_movement_scale))

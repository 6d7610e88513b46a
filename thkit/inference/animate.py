"""``thkit animate``: a source image animated by a driving video, written as a video file.

Pipeline (three threads): a reader thread decodes the driving video with PyAV, crops and resizes each frame
to the model size (bounded queue); the main thread runs :class:`~thkit.inference.stream.StreamingAnimator`
(source cached once, frames in batches); a writer thread encodes the results (bounded queue) into a
temporary file next to the output, with the driving video's audio, and renames it at the end.  Any error
removes the temporary file, so the output path only ever holds a complete video.

As the demos people know: LivePortrait's default output name (:func:`default_output`), a still image as driving
input (one frame, written as an image or a 1-frame video) and paste-back into the full source
(:mod:`thkit.inference.paste`); FOMM's reference frame of relative motion (``--best-frame`` /
``--find-best-frame``, :mod:`thkit.inference.best_frame`) and its visualiser's panels (``visualize``).
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

__all__ = ["resolve_device", "read_image", "animate_video", "AnimateResult", "motion_settings", "default_output",
           "is_image_file", "set_reference", "check_reference",
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
    best_frame: int | None = None  # the reference frame of relative motion when not the first
    best_frame_found: bool = False  # found by face landmarks (find_best_frame), not given
    panels: list[str] = field(default_factory=list)  # the panels of each frame, left to right (visualize)

    @property
    def fps_compute(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


#: still-image files accepted as driving input (one frame out)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: image files an animation of a still driving image can be written as
IMAGE_OUTPUTS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
#: frame rate of the 1-frame video made from a still driving image
STILL_FPS = 25


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a still image by its extension (:data:`IMAGE_SUFFIXES`)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def default_output(source: str | os.PathLike | np.ndarray, driving: str | os.PathLike,
                   folder: str | os.PathLike = "animations") -> Path:
    """LivePortrait's default output name: ``animations/<source stem>--<driving stem>.mp4``."""
    stem = "source" if isinstance(source, np.ndarray) else Path(source).stem
    return Path(folder) / f"{stem}--{Path(driving).stem}.mp4"


@dataclass
class _Driving:
    """A driving input: a video file, or a still image (one frame at :data:`STILL_FPS`, no audio)."""

    path: Path
    label: str  # 'the driving video x.mp4' / 'the driving image x.png'
    fps: Any
    num_frames: int | None
    has_audio: bool
    image: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> _Driving:
        from fractions import Fraction

        from thkit.inference.video import probe_video

        if is_image_file(path):
            img = read_image(path, what="driving image")
            return cls(Path(path), f"the driving image {path}", Fraction(STILL_FPS), 1, False, img)
        info = probe_video(path, what="driving video")
        return cls(Path(path), f"the driving video {path}", info.fps, info.num_frames, info.has_audio)

    def frames(self, max_frames: int | None = None):
        from thkit.inference.video import iter_frames

        if self.image is not None:
            return iter([self.image])
        return iter_frames(self.path, max_frames, what="driving video")


class _ImageWriter:
    """The writer of a 1-frame animation as an image file (PNG or JPEG), written atomically on :meth:`close`."""

    audio_copied = False
    audio_codec = None

    def __init__(self, path: Path):
        self.path = path
        self.frame: np.ndarray | None = None

    def write(self, frame: np.ndarray) -> None:
        if self.frame is not None:
            raise InferenceError(f"--out {self.path} is an image, which holds one frame, but the driving input gives "
                                 f"more: write a video (.mp4), or animate one frame (--max-frames 1)")
        self.frame = frame

    def close(self) -> Path:
        from PIL import Image

        from thkit.fileio import atomic_write

        fmt = IMAGE_OUTPUTS[self.path.suffix.lower()]
        extra = {"quality": 95} if fmt == "JPEG" else {}
        return atomic_write(self.path, lambda f: Image.fromarray(self.frame).save(f, format=fmt, **extra))

    def abort(self) -> None:
        self.frame = None


class _Recorder:
    """The model as :class:`~thkit.inference.stream.StreamingAnimator` sees it, keeping the last ``detect``
    (the driving keypoints as detected) and ``animate`` outputs for the visualisation panels."""

    def __init__(self, model: torch.nn.Module):
        self._model = model
        self.kp_driving: dict[str, Tensor] | None = None
        self.out: dict[str, Any] | None = None

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        self.kp_driving = self._model.detect(image)
        return self.kp_driving

    def animate(self, *args, **kwargs) -> dict[str, Any]:
        self.out = self._model.animate(*args, **kwargs)
        return self.out

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def check_reference(best_frame: int | None, find_best_frame: bool, relative: bool,
                    keypoint_transfer: torch.nn.Module | None = None, num_frames: int | None = None,
                    label: str = "the driving video") -> None:
    """One-line errors for ``--best-frame`` / ``--find-best-frame`` that cannot apply."""
    if best_frame is None and not find_best_frame:
        return
    if best_frame is not None and find_best_frame:
        raise InferenceError("give --find-best-frame or --best-frame N, not both")
    what = "--find-best-frame" if find_best_frame else "--best-frame"
    if keypoint_transfer is not None or not relative:
        raise InferenceError(f"{what} picks the reference frame of relative motion, which this run does not use "
                             f"({'an animation mode network' if keypoint_transfer is not None else 'absolute motion'})"
                             f"; use --relative (or --mode relative)")
    if best_frame is not None:
        if best_frame < 0 or (num_frames is not None and best_frame >= num_frames):
            have = f" (it has {num_frames} frames: 0 .. {num_frames - 1})" if num_frames else ""
            raise InferenceError(f"--best-frame {best_frame} is not a frame of {label}{have}")


def set_reference(animator, model: torch.nn.Module, reference: Tensor) -> None:
    """Make ``reference`` (a ``(1, C, H, W)`` model input) the frame that relative motion is taken from, instead
    of the first driving frame (FOMM's ``--best_frame``: the video is animated forwards and backwards from it)."""
    if animator.transfer is None:
        raise RuntimeError("call set_source first")
    with torch.inference_mode():
        animator.transfer.set_initial(model.detect(reference))


def _frame_at(frames, index: int, label: str) -> np.ndarray:
    """Frame ``index`` of the iterator ``frames`` (closed afterwards)."""
    n = 0
    try:
        for f in frames:
            if n == index:
                return f
            n += 1
    finally:
        if hasattr(frames, "close"):
            frames.close()
    raise InferenceError(f"--best-frame {index} is not a frame of {label} (it has {n} frames: 0 .. {n - 1})")


def animate_video(
    model: torch.nn.Module,
    source: str | os.PathLike | np.ndarray,
    driving: str | os.PathLike,
    out: str | os.PathLike | None,
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
    best_frame: int | None = None,
    find_best_frame: bool = False,
    paste_back: bool = False,
    visualize: bool = False,
    control: Any = None,
    on_frame: Any = None,
    precision: str | None = None,
    calibrate: Any = None,
) -> AnimateResult:
    """Animate ``source`` (an image file or an (H, W, 3) uint8 array) with the driving video and write ``out``.

    The output has the driving video's frame rate and audio; its frames are ``image_size`` square (three
    side by side with ``side_by_side``: source | driving | result).  See the module docstring for the
    threads and the atomic write.  ``keypoint_transfer`` (:func:`animation_mode_network`): a network that maps
    ``(kp_source, kp_driving)`` to the keypoints to animate with, in place of motion transfer.  ``control``
    (:func:`thkit.transfer_control.build_motion_control`): pose alignment and pose / expression edits.

    ``driving`` may be a still image (:data:`IMAGE_SUFFIXES`): one frame out, written as an image when ``out``
    ends in .png / .jpg, else as a 1-frame video.  ``out=None``: :func:`default_output`.

    ``best_frame`` / ``find_best_frame`` (FOMM's demo): relative motion is taken with respect to that driving frame
    (given, or the one whose face landmarks best match the source's, :mod:`thkit.inference.best_frame`) instead of
    the first; as FOMM's forward + backward animation from it, joined in the original order.

    ``paste_back`` (LivePortrait): the source's face is cropped (as ``crop`` does; the driving video is cropped only
    with ``crop``), animated, and each result blended back into the full source image
    (:mod:`thkit.inference.paste`): frames at the source's resolution.

    ``visualize`` (FOMM's visualiser): each frame shows the source and the driving frame with their keypoints
    (:func:`thkit.engine.visualize.draw_keypoints`), the warped source, the occlusion map and the result, side by
    side (``AnimateResult.panels`` names them).  ``on_frame``: called with every written frame (``(H, W, 3)`` uint8,
    before encoding), e.g. to keep some for a picture.  ``precision``: ``'fp32'`` (default), ``'bf16'`` or ``'fp16'``
    autocast (:func:`thkit.inference.stream.resolve_precision`).  ``calibrate``: called once with the prepared
    source (1, C, H, W) and the first :data:`thkit.quantize.CALIBRATION_FRAMES` prepared driving frames (cropped as
    the animation sees them, in the model's input range); it returns the model to animate with
    (``--int8-calibration driving``: :func:`thkit.quantize.load_int8` with that content).
    """
    from tqdm import tqdm

    from thkit.inference.face import FaceDetector, find_crop, quiet_native_stderr
    from thkit.inference.face import crop as crop_image
    from thkit.inference.stream import StreamingAnimator, resolve_batch_size
    from thkit.inference.video import OUTPUT_FORMATS, BackgroundIterator, VideoWriter, map_frames

    device = torch.device(device)
    batch_size = resolve_batch_size(batch_size, device)
    size = int(image_size)
    if size < 8:
        raise InferenceError(f"image size {size} is too small")
    if max_frames is not None and max_frames < 1:
        raise InferenceError(f"--max-frames must be >= 1, got {max_frames}")
    if sum(map(bool, (side_by_side, paste_back, visualize))) > 1:
        raise InferenceError("--side-by-side, --paste-back and the visualisation are different layouts: give one")
    out = default_output(source, driving) if out is None else Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS and suffix not in IMAGE_OUTPUTS:
        from thkit.inference.errors import VideoWriteError

        raise VideoWriteError(f"cannot write {out}: unsupported extension {suffix or '(none)'!r} "
                              f"(use one of {', '.join([*OUTPUT_FORMATS, *IMAGE_OUTPUTS])})")
    # check every input before any work
    src_img = read_image(source) if not isinstance(source, np.ndarray) else np.ascontiguousarray(source)
    drv_in = _Driving.open(driving)
    n_total = drv_in.num_frames if max_frames is None else min(max_frames, drv_in.num_frames or max_frames)
    if suffix in IMAGE_OUTPUTS and n_total != 1:
        raise InferenceError(f"--out {out} is an image, which holds one frame, but {drv_in.label} has "
                             f"{n_total or 'several'} frames: write a video (.mp4), or give a still driving image "
                             f"or --max-frames 1")
    check_reference(best_frame, find_best_frame, relative, keypoint_transfer, n_total, drv_in.label)

    crop_info: dict[str, Any] = {}
    src_box = drv_box = None
    if crop or paste_back:
        with quiet_native_stderr(), FaceDetector(face_detector) as det:  # MediaPipe's graph threads log to fd 2
            label = "the source image" + ("" if isinstance(source, np.ndarray) else f" {source}")
            src_box, _ = find_crop(det, [src_img], label, crop_scale)
            crop_info = {"detector": det.backend, "source_box": src_box}
            if crop:
                first = list(drv_in.frames(max(1, int(crop_frames))))
                drv_box, hits = find_crop(det, first, drv_in.label, crop_scale)
                crop_info.update(driving_box=drv_box, driving_frames_checked=len(first),
                                 driving_frames_with_face=hits)

    reference = None
    best = None
    if find_best_frame:
        from thkit.inference.best_frame import find_best_frame as _find

        src_face = crop_image(src_img, src_box) if src_box is not None else src_img
        frames = (crop_image(f, drv_box) if drv_box is not None else f for f in drv_in.frames(max_frames))
        best = _find(src_face, frames, driving_name=drv_in.label,
                     source_name="the source image" + ("" if isinstance(source, np.ndarray) else f" {source}"))
        best_frame = best.index
    if best_frame is not None:
        reference = _frame_at(drv_in.frames(max_frames), best_frame, drv_in.label)

    src_unit = _prepare(src_img, src_box, size)
    src_u8 = _to_uint8(src_unit)
    paster = None
    if paste_back:
        from thkit.inference.paste import Paster

        paster = Paster(src_img, src_box)
    pin = device.type == "cuda"

    def prep(frame: np.ndarray) -> Tensor:
        t = _prepare(frame, drv_box, size)
        return t.pin_memory() if pin else t

    if calibrate is not None:
        from thkit.quantize import CALIBRATION_FRAMES

        first = [from_unit(prep(f), input_range) for f in drv_in.frames(min(CALIBRATION_FRAMES, n_total or 1))]
        model = calibrate(from_unit(src_unit, input_range).unsqueeze(0), first)
    recorder = _Recorder(model) if visualize else None
    animator = StreamingAnimator(recorder or model, relative=relative, relative_jacobian=relative_jacobian,
                                 adapt_movement_scale=adapt_movement_scale, batch_size=batch_size,
                                 keypoint_transfer=keypoint_transfer, control=control, precision=precision)
    audio_from = driving if (audio and drv_in.has_audio) else None
    qsize = queue_size or max(8, 2 * batch_size)
    writer = None
    panels: list[str] = []
    frame_hw = [size, size]

    def open_writer(frame: np.ndarray):
        frame_hw[:] = frame.shape[:2]
        if suffix in IMAGE_OUTPUTS:
            return _ImageWriter(out)
        return VideoWriter(out, drv_in.fps, frame.shape[1], frame.shape[0], audio_from=audio_from, crf=crf,
                           queue_size=qsize)

    reader = None
    bar = tqdm(total=n_total, unit="frame", desc=f"animate {Path(driving).name}", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    count = 0
    try:
        src_in = from_unit(src_unit, input_range).unsqueeze(0).to(device)
        animator.set_source(src_in)
        if reference is not None:
            set_reference(animator, model, from_unit(prep(reference), input_range).unsqueeze(0).to(device))
        reader = BackgroundIterator(map_frames(prep, drv_in.frames(max_frames)), maxsize=qsize, name="thkit-reader")
        batch: list[Tensor] = []

        def flush() -> None:
            nonlocal count, writer
            drv = torch.stack(batch).to(device, non_blocking=pin)
            drv_model = from_unit(drv, input_range)
            pred = animator.step(drv_model)
            res = _to_uint8(to_unit(pred, input_range))
            if side_by_side:
                drv_u8 = _to_uint8(drv)
                frames = [np.concatenate([src_u8, drv_u8[i], res[i]], axis=1) for i in range(len(batch))]
            elif paster is not None:
                frames = [paster(r) for r in res]
            elif recorder is not None:
                from thkit.engine.visualize import animation_columns

                cols = animation_columns(src_in, drv_model, recorder.out, input_range, recorder.kp_driving)
                panels[:] = [name for name, _ in cols]
                tiles = [_to_uint8(c) for _, c in cols]
                frames = [np.concatenate([t[i] for t in tiles], axis=1) for i in range(len(batch))]
            else:
                frames = list(res)
            for frame in frames:
                if writer is None:
                    writer = open_writer(frame)
                writer.write(frame)
                if on_frame is not None:
                    on_frame(frame)
            count += len(batch)
            bar.update(len(batch))
            batch.clear()

        for frame in reader:
            batch.append(frame)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if reader is not None:
            reader.close()
        bar.close()
    seconds = time.perf_counter() - t0
    if audio_from is None:
        audio_state = "disabled" if not audio else ("none in the driving image" if drv_in.image is not None
                                                    else "none in the driving video")
    else:
        audio_state = ("copied" if writer.audio_copied
                       else f"transcoded ({writer.audio_codec} is not accepted by {out.suffix})")
    return AnimateResult(path=out, frames=count, fps=float(drv_in.fps), size=(frame_hw[1], frame_hw[0]),
                         seconds=seconds, audio=audio_state, crop=crop_info,
                         motion=dict(relative=relative, relative_jacobian=relative_jacobian,
                                     adapt_movement_scale=adapt_movement_scale),
                         best_frame=best_frame, best_frame_found=best is not None, panels=panels)

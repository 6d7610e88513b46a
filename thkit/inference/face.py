"""Offline face detection and VoxCeleb-style square crops for inference.

The models of the FOMM family only work on face crops like their training data (VoxCeleb: the head centred,
filling about half of a square frame).  :class:`FaceDetector` finds faces with a detector whose model ships
inside an installed wheel, so nothing is downloaded:

* ``mediapipe`` (preferred): MediaPipe's BlazeFace face detection (``mediapipe.solutions.face_detection``,
  the .tflite models are in the ``mediapipe`` 0.10.x wheels that still have ``solutions``); the short-range
  model is tried first, then the full-range one;
* ``skimage``: scikit-image's LBP frontal-face cascade (``skimage.feature.Cascade``), less accurate and
  without scores (the largest detection wins).

:func:`crop_box` turns a face box into a square crop (``scale`` times the face size, shifted up to include
the hair, kept inside the image); :func:`smoothed_box` takes the median crop over several frames (the first
frames of a driving video), so one fixed box is used for the whole video.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thkit.inference.errors import InferenceError, NoFaceError

__all__ = ["Box", "FaceDetector", "crop_box", "smoothed_box", "crop", "find_crop", "available_backends",
           "quiet_native_stderr"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: left, top, width, height (and the detector's score, if any)."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)


def available_backends() -> list[str]:
    """Face-detector backends importable here, best first."""
    import importlib.util

    out = []
    try:
        if importlib.util.find_spec("mediapipe") is not None:
            import mediapipe as mp  # noqa: F401

            if hasattr(mp, "solutions"):
                out.append("mediapipe")
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        pass
    if importlib.util.find_spec("skimage") is not None:
        out.append("skimage")
    return out


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence native libraries' start-up logging (TFLite / absl write to file descriptor 2 directly)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceDetector:
    """Face boxes of an RGB uint8 image, best first (see the module docstring for the backends).

    Args:
        backend: ``'auto'`` (the first of :func:`available_backends`), ``'mediapipe'`` or ``'skimage'``.
        min_confidence: MediaPipe's detection threshold.
    """

    def __init__(self, backend: str = "auto", min_confidence: float = 0.5):
        have = available_backends()
        if backend == "auto":
            if not have:
                raise InferenceError("face cropping needs a face detector: install mediapipe (0.10.21 ships its "
                                     "models in the wheel) or scikit-image")
            backend = have[0]
        if backend not in ("mediapipe", "skimage"):
            raise InferenceError(f"unknown face detector {backend!r} (use auto, mediapipe or skimage)")
        if backend not in have:
            what = "mediapipe 0.10.x with mediapipe.solutions (e.g. mediapipe==0.10.21)" if backend == "mediapipe" \
                else "scikit-image"
            raise InferenceError(f"face detector {backend!r} is not available: install {what}")
        self.backend = backend
        self.min_confidence = float(min_confidence)
        self._models: list = []
        self._cascade = None

    def _mediapipe(self, image: np.ndarray) -> list[Box]:
        import mediapipe as mp

        first = not self._models
        if first:
            fd = mp.solutions.face_detection
            with quiet_native_stderr():
                self._models = [fd.FaceDetection(model_selection=m, min_detection_confidence=self.min_confidence)
                                for m in (0, 1)]
        h, w = image.shape[:2]
        for model in self._models:  # short range first (close-up faces), then full range
            with quiet_native_stderr():  # TFLite / MediaPipe write start-up log lines to fd 2
                result = model.process(np.ascontiguousarray(image))
            boxes = []
            for det in result.detections or []:
                b = det.location_data.relative_bounding_box
                boxes.append(Box(b.xmin * w, b.ymin * h, b.width * w, b.height * h, float(det.score[0])))
            if boxes:
                return sorted(boxes, key=lambda b: -b.score)
        return []

    def _skimage(self, image: np.ndarray) -> list[Box]:
        from skimage import data, feature

        if self._cascade is None:
            self._cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())
        h, w = image.shape[:2]
        side = min(h, w)
        found = self._cascade.detect_multi_scale(img=image, scale_factor=1.2, step_ratio=1,
                                                 min_size=(max(16, side // 12),) * 2, max_size=(side, side))
        boxes = [Box(d["c"], d["r"], d["width"], d["height"], 1.0) for d in found]
        return sorted(boxes, key=lambda b: -b.w * b.h)

    def __call__(self, image: np.ndarray) -> list[Box]:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InferenceError(
                f"face detection expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        return self._mediapipe(image) if self.backend == "mediapipe" else self._skimage(image)

    def close(self) -> None:
        if self._models:
            with quiet_native_stderr():  # MediaPipe graphs log from their threads until they are closed
                for m in self._models:
                    try:
                        m.close()
                    except Exception:  # noqa: BLE001
                        pass
        self._models = []

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def crop_box(face: Box, image_hw: tuple[int, int], scale: float = 1.8, shift: float = 0.1) -> tuple[int, int, int]:
    """A square crop ``(left, top, side)`` around ``face``: side ``scale * max(w, h)``, centre moved up by
    ``shift * h`` (to take in the hair), shrunk to fit and moved inside the image."""
    if scale <= 0:
        raise InferenceError(f"crop scale must be > 0, got {scale}")
    h, w = image_hw
    cx, cy = face.center
    cy -= shift * face.h
    side = min(scale * max(face.w, face.h), h, w)
    side = max(int(round(side)), 2)
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    return left, top, side


def smoothed_box(boxes: Sequence[tuple[int, int, int]], image_hw: tuple[int, int]) -> tuple[int, int, int]:
    """The median (centre x, centre y, side) of several crops, kept inside the image."""
    if not boxes:
        raise ValueError("smoothed_box needs at least one box")
    h, w = image_hw
    side = int(round(statistics.median(b[2] for b in boxes)))
    cx = statistics.median(b[0] + b[2] / 2 for b in boxes)
    cy = statistics.median(b[1] + b[2] / 2 for b in boxes)
    side = min(side, h, w)
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    return left, top, side


def crop(image: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """``image[top:top+side, left:left+side]``."""
    left, top, side = box
    return image[top:top + side, left:left + side]


def find_crop(detector: FaceDetector, images: Sequence[np.ndarray], what: str, scale: float = 1.8,
              min_hits: int = 1) -> tuple[tuple[int, int, int], int]:
    """One square crop for ``images`` (all the same size): the median of the per-image crops of the best face.

    Returns ``(box, hits)``; raises :class:`NoFaceError` naming ``what`` when fewer than ``min_hits`` images
    have a face.
    """
    boxes = []
    hw = images[0].shape[:2]
    for img in images:
        faces = detector(img)
        if faces:
            boxes.append(crop_box(faces[0], hw, scale))
    if len(boxes) < max(1, min_hits):
        n = len(images)
        where = "" if n == 1 else f" (checked its first {n} frames)"
        raise NoFaceError(f"no face found in {what}{where} by the {detector.backend} face detector; run without "
                          f"--crop, or crop the input to the face yourself")
    return smoothed_box(boxes, hw), len(boxes)

"""The driving frame that best matches the source face (FOMM's ``demo.py --find_best_frame``).

Relative motion transfer applies the driving keypoints' change since a reference frame to the source
(:mod:`thkit.transfer`), so it works best when the reference frame shows the face in the source's pose and
expression.  The official FOMM demo (``find_best_frame`` in ``demo.py``; TPSMM's and MRFA's demos copy it)
picks that frame by face landmarks:

* landmarks of the source and of every driving frame (FOMM: ``face_alignment``'s 68 points on the 256x256
  frames; here MediaPipe's 468-point face mesh, whose model ships in the ``mediapipe`` 0.10.21 wheel, so
  nothing is downloaded; frames resized to 256x256 as FOMM's are);
* each set normalised for position and scale (:func:`normalize_landmarks`): centred on its mean, then divided
  by the square root of its convex-hull area;
* the score of a frame is the sum of squared differences to the source's normalised landmarks
  (:func:`landmark_distance`); the lowest wins (the first on a tie, as FOMM's strict ``<``).

The video is then animated with that frame as the reference of relative motion: FOMM animates
``driving[i:]`` forwards and ``driving[:i + 1]`` backwards and joins them in the original order (each
prediction depends only on its own frame and the reference, so :func:`thkit.inference.animate.animate_video`
streams the frames in order with frame ``i`` as the reference and gets the same frames).

Unlike FOMM (which crashes on a frame without a face), frames where no face is found are skipped; a video
with no face at all is a :class:`~thkit.inference.errors.NoFaceError` naming it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from thkit.inference.errors import InferenceError, NoFaceError

__all__ = ["normalize_landmarks", "landmark_distance", "best_frame_index", "FaceMeshLandmarks", "find_best_frame",
           "BestFrame", "LANDMARK_SIZE"]

#: frames are resized to this square size before their landmarks are found (FOMM's demo works at 256x256)
LANDMARK_SIZE = 256

Landmarker = Callable[[np.ndarray], "np.ndarray | None"]


def normalize_landmarks(points: np.ndarray) -> np.ndarray:
    """``(N, 2+)`` landmarks centred on their mean, their x and y divided by ``sqrt(area of the convex hull of
    (x, y))`` (FOMM demo's ``normalize_kp``), in float64.  Other columns (a depth) are only centred."""
    from scipy.spatial import ConvexHull, QhullError

    kp = np.array(points, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] < 2 or kp.shape[0] < 3:
        raise InferenceError(f"landmarks must be (N >= 3, 2) points, got shape {tuple(kp.shape)}")
    kp = kp - kp.mean(axis=0, keepdims=True)
    try:
        area = ConvexHull(kp[:, :2]).volume  # in 2D, scipy's 'volume' is the area
    except QhullError as e:
        raise InferenceError(f"cannot normalise {kp.shape[0]} landmarks: they are collinear "
                             f"({str(e).splitlines()[0]})") from e
    kp[:, :2] = kp[:, :2] / np.sqrt(area)
    return kp


def landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``sum((a - b) ** 2)`` of two normalised landmark sets of the same shape (FOMM demo's ``new_norm``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise InferenceError(f"landmark sets differ in shape: {a.shape} vs {b.shape}")
    return float(((a - b) ** 2).sum())


def best_frame_index(source: np.ndarray, frames: Iterable[np.ndarray | None]) -> tuple[int | None, list[float]]:
    """The index of the landmark set in ``frames`` closest to ``source`` after :func:`normalize_landmarks` (the
    first of equal scores), and every frame's score (``inf`` for a frame given as None: no face).  The index is
    None when no frame has landmarks."""
    ref = normalize_landmarks(source)
    scores = [float("inf") if f is None else landmark_distance(ref, normalize_landmarks(f)) for f in frames]
    best, best_score = None, float("inf")
    for i, s in enumerate(scores):
        if s < best_score:
            best, best_score = i, s
    return best, scores


class FaceMeshLandmarks:
    """MediaPipe's face mesh (:class:`thkit.metrics.face.MediaPipeFaceMesh`, static-image mode, one face) as a
    callable: ``(H, W, 3)`` uint8 RGB -> ``(468, 2)`` landmarks in pixels, or None when no face is found."""

    name = "mediapipe face mesh"

    def __init__(self):
        from thkit.inference.face import quiet_native_stderr
        from thkit.metrics.face import MediaPipeFaceMesh

        try:
            with quiet_native_stderr():  # TFLite start-up log lines
                self._mesh = MediaPipeFaceMesh("--find-best-frame")
        except ImportError as e:
            raise InferenceError(str(e).splitlines()[0]) from e

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        from thkit.inference.face import quiet_native_stderr

        with quiet_native_stderr():
            return self._mesh.landmarks(np.ascontiguousarray(image))

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMeshLandmarks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


@dataclass
class BestFrame:
    """What :func:`find_best_frame` found: the frame index, every frame's score (``inf``: no face) and the
    landmark backend."""

    index: int
    scores: list[float] = field(default_factory=list)
    backend: str = ""

    @property
    def frames_with_face(self) -> int:
        return sum(np.isfinite(s) for s in self.scores)


def find_best_frame(source: np.ndarray, frames: Iterable[np.ndarray], driving_name: str = "the driving video",
                    source_name: str = "the source image", landmarks: Landmarker | None = None,
                    size: int | None = LANDMARK_SIZE) -> BestFrame:
    """The driving frame whose normalised face landmarks best match the source's (see the module docstring).

    Args:
        source: ``(H, W, 3)`` uint8 RGB source image (as the model sees it: cropped when cropping).
        frames: the driving frames, ``(H, W, 3)`` uint8 RGB, in order.
        driving_name, source_name: how errors name the inputs (e.g. ``'the driving video clip.mp4'``).
        landmarks: ``image -> (N, 2) points or None``; default :class:`FaceMeshLandmarks`.
        size: images are resized to ``size`` x ``size`` first (FOMM: 256); None keeps them as they are.

    Raises :class:`NoFaceError` naming the input when the source, or every driving frame, has no face.
    """
    own = landmarks is None
    lm = FaceMeshLandmarks() if own else landmarks
    backend = getattr(lm, "name", type(lm).__name__)
    try:
        def find(img: np.ndarray) -> np.ndarray | None:
            return lm(_resize(img, size) if size else img)

        src = find(source)
        if src is None:
            raise NoFaceError(f"--find-best-frame: no face found in {source_name} by the {backend}")
        pts = [find(f) for f in frames]
    finally:
        if own:
            lm.close()
    if not pts:
        raise InferenceError(f"--find-best-frame: {driving_name} has no frames")
    index, scores = best_frame_index(src, pts)
    if index is None:
        raise NoFaceError(f"--find-best-frame: no face found in any of the {len(pts)} frames of {driving_name} by "
                          f"the {backend}; give the reference frame with --best-frame N, or leave both out")
    return BestFrame(index=index, scores=scores, backend=backend)

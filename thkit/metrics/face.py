"""Face-motion metrics: AKD (landmark distance) and ARD (head-rotation distance), with their face backends.

**AKD** (average keypoint distance; FOMM sec. 4, AliaksandrSiarohin/pose-evaluation ``extract.py`` +
``cmp_kp.py``).  Paper backend ``'face_alignment'``: the ``face_alignment`` package (1adrianb), S3FD detector
+ 2D-FAN-4, 68 iBUG points, ``flip_input=False``, first face, on the 8-bit frames at the evaluation size
(256 in every paper).  Per frame the score is the **mean absolute coordinate difference** over the 68 x 2
coordinates, in pixels (an L1 mean, not a Euclidean distance), driving vs generated; then the mean over frames.
Frames with no face in the generated image are skipped (as ``cmp_kp.py``); frames with no face in the driving
frame are skipped too (``cmp_kp.py`` would crash on them), each counted by reason.

**ARD** (average rotation distance; MCC ``calculate_pose_distance``, logged as "pose accuracy").  Paper
backend ``'mediapipe_task'``: MediaPipe ``FaceLandmarker`` (IMAGE mode, one face) with the
``face_landmarker_v2_with_blendshapes.task`` model and ``output_facial_transformation_matrixes=True``; the
rotation block of the facial transformation matrix -> scipy Euler ``'xyz'`` in degrees; per frame the mean
|difference| over the three angles (no angle wrapping, as MCC), driving vs generated; then the mean.  Frames
without a face in either image are skipped and counted.

Offline alternative backend (``backend='mediapipe'``, ``paper_exact = False``): MediaPipe 0.10.21's legacy
``solutions.face_mesh`` (its .tflite models ship inside the wheel; static-image mode, 468 points).

* AKD: mean |difference| over the 468 x 2 mesh coordinates in pixels.  Different points than the 68 iBUG
  points, so values are NOT comparable with FAN AKD (measured detector noise on known warps: ~0.4 px for
  the mesh, ~0.5 px for dlib-68).
* ARD: the head rotation is an anatomical frame built from the mesh (x: subject's right -> left through eye
  corners, mouth corners and cheeks; y: mouth centre -> eye centre (points of about equal depth),
  orthogonalised; z = x cross y, towards the camera;
  image y and depth flipped so the camera frame is right-handed with y up), then Euler ``'xyz'`` degrees as
  MCC.  An in-plane image rotation by theta changes the z angle by about theta (tested), but the zero of the
  x angle depends on the chosen points (about 10 deg on a frontal photo) and the angles are not
  FaceLandmarker's (no canonical-model fit): NOT comparable with MCC's values.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.metrics.base import PerFrameMetric, Skip, to_uint8_hwc
from thkit.metrics.weights import WeightsSpec, missing_package_error, resolve_weights
from thkit.registry import METRICS

Tensor = torch.Tensor

__all__ = ["AKD", "ARD", "MediaPipeFaceMesh", "MediaPipeFaceLandmarker", "FaceAlignmentFAN", "mesh_rotation",
           "S3FD_WEIGHTS", "FAN_WEIGHTS", "FACE_LANDMARKER_TASK", "MEDIAPIPE_INSTALL"]

S3FD_WEIGHTS = WeightsSpec(
    "s3fd-619a316812.pth", "the S3FD face detector weights of the face_alignment package",
    "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth")
FAN_WEIGHTS = WeightsSpec(
    "2DFAN4-11f355bf06.pth.tar", "the 2D-FAN-4 68-landmark network weights of the face_alignment package",
    "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar")
FACE_LANDMARKER_TASK = WeightsSpec(
    "face_landmarker_v2_with_blendshapes.task",
    "the MediaPipe FaceLandmarker model bundle (Apache-2.0) that MCC uses",
    "https://storage.googleapis.com/mediapipe-assets/face_landmarker_v2_with_blendshapes.task (also committed in "
    "the MCC repository ShaelynZ/synergize-motion-appearance under basicsr/metrics/norm_pose/utils/mp_models/; the "
    "model card's face_landmarker.task, https://storage.googleapis.com/mediapipe-models/face_landmarker/"
    "face_landmarker/float16/1/face_landmarker.task, is the same network)")

MEDIAPIPE_INSTALL = ('scripts/install-mediapipe VENV (from the thkit repository), or: pip install --no-deps '
                     '"mediapipe==0.10.21" && pip install absl-py attrs flatbuffers "protobuf>=4.25.3,<5" matplotlib '
                     '(and opencv-python-headless if cv2 is missing)   (--no-deps: its metadata pins '
                     'numpy<2 and pulls jax, neither is needed; it fails with protobuf>=6; 0.10.21 is the last '
                     'release whose wheel ships the face_mesh models)')
FACE_ALIGNMENT_INSTALL = "pip install face-alignment  (or pip install 'thkit[metrics]')"

# mediapipe face-mesh indices (subject's right, subject's left): eye outer / inner corners, mouth corners, cheeks
_MESH_LR_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454))
_MESH_EYES = (33, 133, 362, 263)
_MESH_MOUTH = (61, 291)


def _import_mediapipe(metric: str):
    try:
        import mediapipe as mp
    except ImportError:
        raise missing_package_error(metric, "mediapipe", MEDIAPIPE_INSTALL) from None
    return mp


def mesh_rotation(mesh: np.ndarray) -> np.ndarray:
    """3x3 head rotation (columns: the face's x, y, z axes in a right-handed camera frame with y up and z
    towards the camera) from a ``(468+, 3)`` mediapipe mesh in pixel units (x right, y down, z away)."""
    p = np.asarray(mesh, dtype=np.float64)[:, :3] * np.array([1.0, -1.0, -1.0])
    ex = sum(p[left] - p[right] for right, left in _MESH_LR_PAIRS)
    ex = ex / np.linalg.norm(ex)
    up = p[list(_MESH_EYES)].mean(0) - p[list(_MESH_MOUTH)].mean(0)
    ey = up - (up @ ex) * ex
    ey = ey / np.linalg.norm(ey)
    ez = np.cross(ex, ey)
    return np.stack([ex, ey, ez], axis=1)


def _euler_xyz_deg(rot: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(rot, dtype=np.float64)[:3, :3]).as_euler("xyz", degrees=True)


class MediaPipeFaceMesh:
    """MediaPipe 0.10.21 legacy face mesh (models inside the wheel), static-image mode, one face.

    ``mesh(img)`` -> ``(468, 3)`` in pixels (x, y, z*width) or None; ``landmarks`` -> ``(468, 2)``;
    ``pose`` -> Euler ``'xyz'`` degrees of :func:`mesh_rotation`.  NOT a paper's network."""

    name = "mediapipe-facemesh"
    paper_exact = False

    def __init__(self, metric: str, min_detection_confidence: float = 0.5):
        mp = _import_mediapipe(metric)
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError:
            raise ImportError(f"{metric}: mediapipe {getattr(mp, '__version__', '?')} has no legacy "
                              f"solutions.face_mesh (removed after 0.10.21); {MEDIAPIPE_INSTALL}") from None
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                        min_detection_confidence=min_detection_confidence)

    def mesh(self, img: np.ndarray) -> np.ndarray | None:
        h, w = img.shape[:2]
        res = self._mesh.process(img)
        if not res.multi_face_landmarks:
            return None
        pts = res.multi_face_landmarks[0].landmark
        return np.array([[q.x * w, q.y * h, q.z * w] for q in pts], dtype=np.float64)

    def landmarks(self, img: np.ndarray) -> np.ndarray | None:
        m = self.mesh(img)
        return None if m is None else m[:, :2]

    def pose(self, img: np.ndarray) -> np.ndarray | None:
        m = self.mesh(img)
        return None if m is None else _euler_xyz_deg(mesh_rotation(m))

    def close(self) -> None:
        self._mesh.close()


class MediaPipeFaceLandmarker:
    """MediaPipe Tasks ``FaceLandmarker`` from a local ``.task`` file (MCC's pose backend), IMAGE mode, one
    face, with facial transformation matrices.  ``pose`` -> Euler ``'xyz'`` degrees of its rotation block;
    ``landmarks`` -> ``(478, 2)`` pixels."""

    name = "mediapipe-facelandmarker"
    paper_exact = True

    def __init__(self, metric: str, task_file: Path):
        mp = _import_mediapipe(metric)
        from mediapipe.tasks import python as mp_python
        from mediapipe.tasks.python import vision

        self._mp = mp
        base = mp_python.BaseOptions(model_asset_path=str(task_file), delegate=mp_python.BaseOptions.Delegate.CPU)
        opts = vision.FaceLandmarkerOptions(base_options=base, running_mode=vision.RunningMode.IMAGE,
                                            output_face_blendshapes=False,
                                            output_facial_transformation_matrixes=True, num_faces=1)
        self._det = vision.FaceLandmarker.create_from_options(opts)

    def _detect(self, img: np.ndarray):
        res = self._det.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
        return res if res.face_landmarks else None

    def landmarks(self, img: np.ndarray) -> np.ndarray | None:
        res = self._detect(img)
        if res is None:
            return None
        h, w = img.shape[:2]
        return np.array([[q.x * w, q.y * h] for q in res.face_landmarks[0]], dtype=np.float64)

    def pose(self, img: np.ndarray) -> np.ndarray | None:
        res = self._detect(img)
        if res is None or not res.facial_transformation_matrixes:
            return None
        return _euler_xyz_deg(np.asarray(res.facial_transformation_matrixes[0]))

    def close(self) -> None:
        self._det.close()


class FaceAlignmentFAN:
    """The ``face_alignment`` package's 2D FAN-4 + S3FD (pose-evaluation's AKD network), built from local files.

    ``face_alignment`` looks its FAN file up in the torch-hub cache (``<hub>/checkpoints/<file name>``) and
    downloads it when absent; we point the hub directory at a temporary folder holding a link to the local
    file while the network is built, so nothing is downloaded.  ``landmarks(img)`` -> first face ``(68, 2)``
    in pixels, or None."""

    name = "face_alignment-2DFAN4-s3fd"
    paper_exact = True

    def __init__(self, metric: str, s3fd: Path, fan: Path, device: str = "cpu"):
        try:
            import face_alignment
        except ImportError:
            raise missing_package_error(metric, "face_alignment", FACE_ALIGNMENT_INSTALL) from None
        import inspect

        lt = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        kwargs: dict[str, Any] = dict(device=device, flip_input=False, face_detector="sfd",
                                      face_detector_kwargs={"path_to_detector": str(s3fd)})
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            kwargs["compile"] = False  # 1.5 compiles by default (slow on CPU, writes caches)
        old_hub = torch.hub.get_dir()
        with tempfile.TemporaryDirectory(prefix="thkit-fan-") as hub:
            os.makedirs(os.path.join(hub, "checkpoints"))
            os.symlink(os.path.abspath(fan), os.path.join(hub, "checkpoints", FAN_WEIGHTS.filename))
            torch.hub.set_dir(hub)
            try:
                self._fa = face_alignment.FaceAlignment(lt, **kwargs)
            finally:
                torch.hub.set_dir(old_hub)

    def landmarks(self, img: np.ndarray) -> np.ndarray | None:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No faces were detected")
            out = self._fa.get_landmarks_from_image(np.ascontiguousarray(img))
        if not out:
            return None
        return np.asarray(out[0], dtype=np.float64)[:, :2]

    def close(self) -> None:
        pass


class _FaceMetric(PerFrameMetric):
    """Shared driver: run the backend on 8-bit frames of target and prediction, skip frames without a face."""

    backends: tuple[str, ...] = ()

    def _backend_files(self, backend: str, **paths) -> dict[str, Path]:
        raise NotImplementedError

    def _quant(self) -> str:
        return "floor" if self.quantize == "floor" else "round"

    def _measure(self, img: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def _distance(self, a: np.ndarray, b: np.ndarray) -> float:
        raise NotImplementedError

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float | Skip]:
        q = self._quant()
        out: list[float | Skip] = []
        for p_img, t_img in zip(to_uint8_hwc(pred, q), to_uint8_hwc(ref, q)):
            mp_ = self._measure(p_img)
            if mp_ is None:
                out.append(Skip("no_face_pred"))
                continue
            mt = self._measure(t_img)
            if mt is None:
                out.append(Skip("no_face_target"))
                continue
            if mp_.shape != mt.shape:
                raise RuntimeError(f"{type(self).__name__}: backend returned {mp_.shape} vs {mt.shape}")
            out.append(self._distance(mp_, mt))
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["weights_files"] = dict(self.weights_files)
        return d

    def __del__(self):  # release mediapipe graphs promptly
        be = getattr(self, "face_backend", None)
        if be is not None:
            try:
                be.close()
            except Exception:  # noqa: BLE001
                pass


@METRICS.register_module()
class AKD(_FaceMetric):
    """Average keypoint distance in pixels at the evaluation size; lower is better.

    Args:
        backend: ``'face_alignment'`` (pose-evaluation's S3FD + 2D-FAN-4, paper-exact) or ``'mediapipe'``
            (offline face mesh from the mediapipe 0.10.21 wheel; NOT comparable with papers).
        s3fd_weights, fan_weights: the face_alignment files (``s3fd-619a316812.pth``,
            ``2DFAN4-11f355bf06.pth.tar``) or a folder holding them; default ``$THKIT_WEIGHTS_DIR``.
        eval_size: the size frames are measured at (the papers: 256).  ``None`` keeps the given size.
    """

    metric_name = "AKD"
    higher_is_better = False
    unit = "px"

    def __init__(self, *, backend: str = "face_alignment", s3fd_weights: str | os.PathLike | None = None,
                 fan_weights: str | os.PathLike | None = None, check_hash: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.weights_files: dict[str, str] = {}
        if backend == "face_alignment":
            s3fd = resolve_weights(S3FD_WEIGHTS, s3fd_weights, metric="AKD", arg="s3fd_weights", check_hash=check_hash)
            fan = resolve_weights(FAN_WEIGHTS, fan_weights, metric="AKD", arg="fan_weights", check_hash=check_hash)
            self.face_backend = FaceAlignmentFAN("AKD", s3fd, fan, device=str(self.device))
            self.weights_files = {"s3fd": str(s3fd), "fan": str(fan)}
        elif backend == "mediapipe":
            self.face_backend = MediaPipeFaceMesh("AKD")
        else:
            raise ValueError(f"AKD: backend must be 'face_alignment' (paper) or 'mediapipe' (offline), got {backend!r}")
        self.backend = self.face_backend.name
        self.paper_exact = self.face_backend.paper_exact

    @property
    def convention(self) -> str:
        pts = "68 iBUG FAN points" if self.paper_exact else "468 mediapipe mesh points (NOT the papers' 68 FAN points)"
        size = f"{self.eval_size}x{self.eval_size}" if self.eval_size else "the given size"
        return (f"per frame mean |dx|,|dy| over the {pts} (an L1 mean, not Euclidean), in pixels at {size}, "
                f"driving vs generated, first face; frames with no face in either image skipped and counted; "
                f"then the mean over frames")

    def _measure(self, img):
        return self.face_backend.landmarks(img)

    def _distance(self, a, b):
        return float(np.mean(np.abs(a - b)))


@METRICS.register_module()
class ARD(_FaceMetric):
    """Average head-rotation distance in degrees (mean |d Euler xyz|); lower is better.

    Args:
        backend: ``'mediapipe_task'`` (MCC's FaceLandmarker transformation matrix, paper-exact, needs the
            ``.task`` file) or ``'mediapipe'`` (offline face-mesh anatomical frame, NOT comparable with papers).
        task_file: ``face_landmarker_v2_with_blendshapes.task`` (or a folder holding it); default
            ``$THKIT_WEIGHTS_DIR``.
    """

    metric_name = "ARD"
    higher_is_better = False
    unit = "deg"

    def __init__(self, *, backend: str = "mediapipe_task", task_file: str | os.PathLike | None = None, **kwargs):
        super().__init__(**kwargs)
        self.weights_files: dict[str, str] = {}
        if backend == "mediapipe_task":
            task = resolve_weights(FACE_LANDMARKER_TASK, task_file, metric="ARD", arg="task_file", check_hash=False)
            self.face_backend = MediaPipeFaceLandmarker("ARD", task)
            self.weights_files = {"task": str(task)}
        elif backend == "mediapipe":
            self.face_backend = MediaPipeFaceMesh("ARD")
        else:
            raise ValueError(f"ARD: backend must be 'mediapipe_task' (MCC) or 'mediapipe' (offline), got {backend!r}")
        self.backend = self.face_backend.name
        self.paper_exact = self.face_backend.paper_exact

    @property
    def convention(self) -> str:
        how = ("FaceLandmarker facial transformation matrix" if self.paper_exact else
               "face-mesh anatomical frame (NOT FaceLandmarker's matrix; not comparable with MCC)")
        return (f"per frame mean |difference| of the scipy Euler 'xyz' angles in degrees of the head rotation "
                f"({how}), driving vs generated, no angle wrapping; frames with no face in either image skipped "
                f"and counted; then the mean over frames")

    def _measure(self, img):
        return self.face_backend.pose(img)

    def _distance(self, a, b):
        return float(np.mean(np.abs(a - b)))


"""Face-geometry regularisation: learned keypoints tied to face landmarks from an offline source.

After "Controllable One-Shot Face Video Synthesis With Semantic Aware Prior" (Liu et al., arXiv 2304.14471), whose
abstract names the missing "face geometry regularization" of keypoint-warping methods as one cause of lost fine
motion; the paper's form of it is not public.  Ours (an assumption, ``docs/methods/semantic_prior.md``): keypoint
``k`` of the source and of the driving frame is pulled onto the mean of the landmarks ``anchors[k]``,

    L = weight * mean_{frames, k visible} mean_{x, y} |kp_k - mean_{j in anchors[k]} lm_j|

(an L1 distance in keypoint coordinates, [-1, 1] over the image, as AKD measures landmarks), so every keypoint gets
a fixed meaning (a point of the face template of :mod:`thkit.transfer_control`).  Landmark sources:

* ``'ground_truth'`` (synthetic data): the renderer's exact landmarks, which the dataset adds to each batch as
  ``landmarks_source`` / ``landmarks_driving`` with ``visible_*`` (:class:`thkit.datasets.frames.FramesDataset`
  reading ``ground_truth.json``; 22 named points, :data:`thkit.datasets.synthetic.LANDMARK_NAMES`);
* ``'mediapipe'`` (real data): MediaPipe's face mesh (468 points; the offline detector of :mod:`thkit.metrics.face`)
  run on the source and driving images, without gradient; a frame without a detected face adds nothing, and says
  so: a warning names the batch items skipped, the first time and whenever the running count of skipped images
  reaches a power of ten (``skipped_images`` / ``seen_images`` keep the totals).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from thkit.errors import ThkitError
from thkit.losses._base import Loss
from thkit.registry import LOSSES

Tensor = torch.Tensor

__all__ = ["FaceGeometryLoss", "anchor_targets"]

logger = logging.getLogger(__name__)


def anchor_targets(landmarks: Tensor, anchors: Sequence[Sequence[int]], visible: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]:
    """The point of each keypoint: the mean of its anchor landmarks, ``(B, K, 2)``, and whether all of them are
    visible, ``(B, K)`` (all true without ``visible``)."""
    if landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise ThkitError(f"landmarks must be (B, N, 2), got {tuple(landmarks.shape)}")
    n = landmarks.shape[1]
    bad = [i for a in anchors for i in a if not 0 <= int(i) < n]
    if bad:
        raise ThkitError(f"FaceGeometryLoss: anchor landmark index {bad[0]} is outside the {n} landmarks given")
    targets = torch.stack([landmarks[:, list(a)].mean(1) for a in anchors], 1)
    if visible is None:
        vis = torch.ones(targets.shape[:2], dtype=torch.bool, device=landmarks.device)
    else:
        vis = torch.stack([visible[:, list(a)].bool().all(1) for a in anchors], 1)
    return targets, vis


@LOSSES.register_module()
class FaceGeometryLoss(Loss):
    """Keypoints tied to face landmarks (face-geometry regularisation; our form of Liu et al. 2023's, module
    docstring).

    Inputs: ``kp_source``, ``kp_driving`` (keypoint dicts); with ``landmarks='ground_truth'`` the batch's
    ``landmarks_source`` / ``landmarks_driving`` (B, N, 2, keypoint coordinates) and ``visible_source`` /
    ``visible_driving``; with ``'mediapipe'`` the ``source`` / ``driving`` images.

    Args:
        weight: the recipe weight.
        anchors: for each keypoint, the landmark indices whose mean is its target (indices of the 22 synthetic
            landmarks, or of MediaPipe's 468 mesh points with ``landmarks='mediapipe'``).
        landmarks: ``'ground_truth'`` (synthetic data) or ``'mediapipe'`` (real data, offline face mesh).
        input_range: the images' value range (``'mediapipe'`` only).
        frames: ``'both'`` (source and driving keypoints) or ``'driving'``.
    """

    default_inputs = {"kp_source": "kp_source", "kp_driving": "kp_driving", "landmarks_source": "landmarks_source",
                      "landmarks_driving": "landmarks_driving", "visible_source": "visible_source",
                      "visible_driving": "visible_driving", "source": "source", "driving": "driving"}

    def __init__(self, weight: float = 1.0, anchors: Sequence[Sequence[int]] = (), landmarks: str = "ground_truth",
                 input_range: Sequence[float] = (0.0, 1.0), frames: str = "both"):
        super().__init__(weight)
        if not anchors:
            raise ThkitError("FaceGeometryLoss: anchors must list the landmark indices of each keypoint")
        self.anchors = [[int(i) for i in (a if isinstance(a, Sequence) else [a])] for a in anchors]
        if any(not a for a in self.anchors):
            raise ThkitError("FaceGeometryLoss: every keypoint needs at least one anchor landmark")
        if landmarks not in ("ground_truth", "mediapipe"):
            raise ThkitError(f"FaceGeometryLoss: landmarks must be 'ground_truth' or 'mediapipe', got {landmarks!r}")
        if frames not in ("both", "driving"):
            raise ThkitError(f"FaceGeometryLoss: frames must be 'both' or 'driving', got {frames!r}")
        self.landmarks = landmarks
        self.input_range = tuple(float(v) for v in input_range)
        self.frames = frames
        self._mesh = None
        #: MediaPipe only: images looked at, and those without a detected face (left out of the loss)
        self.seen_images = 0
        self.skipped_images = 0

    # -- landmark sources ---------------------------------------------------------------------------------
    def _mediapipe(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Face-mesh landmarks (B, 468, 2) in keypoint coordinates and per-image found flags broadcast to (B, 468)."""
        from thkit.metrics.face import MediaPipeFaceMesh
        from thkit.value_range import to_unit

        if self._mesh is None:
            self._mesh = MediaPipeFaceMesh("FaceGeometryLoss")
        x = to_unit(images.detach().float(), self.input_range).clamp(0, 1)
        u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        h, w = u8.shape[1:3]
        pts, found = [], []
        for img in u8:
            lm = self._mesh.landmarks(np.ascontiguousarray(img))
            found.append(lm is not None)
            pts.append(np.zeros((468, 2), np.float32) if lm is None else np.asarray(lm, np.float32)[:468, :2])
        p = torch.from_numpy(np.stack(pts)).to(images.device) - 0.5  # MediaPipe: x * width, pixel edges at integers
        p = torch.stack([2 * p[..., 0] / (w - 1) - 1, 2 * p[..., 1] / (h - 1) - 1], -1)
        vis = torch.tensor(found, device=images.device)[:, None].expand(-1, 468)
        return p, vis

    def _report_missed(self, visible: Tensor, which: str) -> None:
        missed = [i for i, v in enumerate(visible[:, 0].tolist()) if not v]
        before = self.skipped_images
        self.seen_images += int(visible.shape[0])
        self.skipped_images += len(missed)
        if not missed:
            return
        if before == 0 or len(str(self.skipped_images)) > len(str(before)):  # the first, then per power of ten
            logger.warning("FaceGeometryLoss: MediaPipe found no face in %d of %d %s images of this batch (items %s), "
                           "left out of the loss; %d of %d images so far", len(missed), visible.shape[0], which,
                           ", ".join(map(str, missed)), self.skipped_images, self.seen_images)

    def _term(self, kp: dict[str, Tensor], landmarks: Tensor | None, visible: Tensor | None,
              image: Tensor | None, which: str) -> Tensor:
        value = kp["value"]
        if self.landmarks == "mediapipe":
            if image is None:
                raise ThkitError(f"FaceGeometryLoss (mediapipe): the batch has no {which} image")
            landmarks, visible = self._mediapipe(image)
            self._report_missed(visible, which)
        elif landmarks is None:
            raise ThkitError(f"FaceGeometryLoss: the batch has no landmarks_{which}; use a dataset with "
                             "ground_truth.json (thkit's synthetic data) or landmarks='mediapipe'")
        if value.shape[1] != len(self.anchors):
            raise ThkitError(f"FaceGeometryLoss: {len(self.anchors)} anchors for {value.shape[1]} keypoints "
                             "(one anchor list per keypoint)")
        targets, vis = anchor_targets(landmarks.to(value), self.anchors, visible)
        err = (value - targets).abs().mean(-1)  # (B, K)
        m = vis.to(err.dtype)
        return (err * m).sum() / m.sum().clamp_min(1.0)

    def forward(self, kp_driving: dict[str, Tensor], kp_source: dict[str, Tensor] | None = None,
                landmarks_driving: Tensor | None = None, landmarks_source: Tensor | None = None,
                visible_driving: Tensor | None = None, visible_source: Tensor | None = None,
                driving: Tensor | None = None, source: Tensor | None = None) -> Tensor:
        total = self._term(kp_driving, landmarks_driving, visible_driving, driving, "driving")
        if self.frames == "both" and kp_source is not None:
            total = total + self._term(kp_source, landmarks_source, visible_source, source, "source")
        return self.weight * total

    def __getstate__(self) -> dict[str, Any]:  # the MediaPipe graph is not picklable
        state = self.__dict__.copy()
        state["_mesh"] = None
        return state

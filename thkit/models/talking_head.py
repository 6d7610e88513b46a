"""The one generic model: keypoints -> motion -> warp -> (compensate) -> decode.

Every method in thkit is this wiring with different parts (see ``docs/architecture.md``).  Source-only work
lives in :meth:`TalkingHeadModel.encode_source`, so streaming inference computes it once per video.  Optional
part behaviour comes through the hooks of :mod:`thkit.interfaces`, never by asking what a part is.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from thkit.builder import build
from thkit.interfaces import GenerationContext, TalkingHeadModelBase, check_output, prepare_source, warps_features
from thkit.registry import MODELS
from thkit.warp.edit import edit_motion, split_edit

Tensor = torch.Tensor


@MODELS.register_module()
class TalkingHeadModel(TalkingHeadModelBase):
    """Generic one-shot talking-head generator.

    Args:
        keypoint_detector: ``keypoint`` part, run on source and driving.
        motion: ``motion`` part: source + keypoints -> ``deformation`` and ``occlusion_map``.
        encoder: ``encoder`` part: source -> features (fine to coarse).
        decoder: ``decoder`` part: (compensated) warped features + context -> ``prediction``.
        warper: ``warper`` part (default: bilinear ``grid_sample`` with ``align_corners=True``).
        compensator: optional ``compensator`` part between warping and decoding.
        warp_levels: indices of encoder features to warp (default: all of them).
        input_range: the value range images are expected in (documentation and checks; ``(0, 1)`` or
            ``(-1, 1)``, as the recipe says).
    """

    def __init__(
        self,
        keypoint_detector: dict,
        motion: dict,
        encoder: dict,
        decoder: dict,
        warper: dict | None = None,
        compensator: dict | None = None,
        warp_levels: Sequence[int] | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
    ):
        super().__init__()
        self.keypoint_detector = build("keypoint", keypoint_detector, "keypoint_detector")
        self.motion = build("motion", motion, "motion")
        self.encoder = build("encoder", encoder, "encoder")
        self.warper = build("warper", warper or dict(type="GridSampleWarper"), "warper")
        self.compensator = build("compensator", compensator, "compensator")
        self.decoder = build("decoder", decoder, "decoder")
        self.warp_levels = None if warp_levels is None else list(warp_levels)
        self.input_range = tuple(float(v) for v in input_range)

    # -- source side (cacheable) ------------------------------------------------------------------------
    def encode_source(self, source: Tensor) -> dict[str, Any]:
        """Everything that depends on the source only: its keypoints, encoder features and, when the motion
        estimator's :meth:`~thkit.interfaces.MotionEstimator.prepare_source` gives them, its source-only inputs
        (``motion_source``, e.g. the downsampled source), passed back to it as ``source_cache=``."""
        kp_source = self.keypoint_detector(source)
        check_output("keypoint", kp_source, "keypoint_detector")
        features = list(self.encoder(source))
        cache = {"source": source, "kp_source": kp_source, "features": features}
        motion_source = prepare_source(self.motion, source, kp_source)
        if motion_source is not None:
            cache["motion_source"] = motion_source
        return cache

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """Keypoints of an image (the driving frame)."""
        return self.keypoint_detector(image)

    # -- per driving frame ------------------------------------------------------------------------------
    def animate(self, cache: dict[str, Any], kp_driving: dict[str, Tensor],
                driving: Tensor | None = None) -> dict[str, Any]:
        """Generate the frame that puts the cached source into the pose of ``kp_driving``.

        A batch-1 ``cache`` serves a batch of driving keypoints: it is expanded (a view, no copy).  Keypoints that
        carry a warp-level edit (``edit_from`` / ``edit_to``, :mod:`thkit.warp.edit`) are animated unedited and the
        edit is composed onto the predicted motion before anything is warped.
        """
        source, kp_source, features = cache["source"], cache["kp_source"], cache["features"]
        if source.shape[0] != kp_driving["value"].shape[0]:
            n = kp_driving["value"].shape[0]
            source, kp_source, features = _expand_batch(source, kp_source, features, n)
        kp_motion, edit = split_edit(kp_driving)  # a warp-level edit (thkit.warp.edit) is not the network's input
        if "motion_source" in cache:
            motion = self.motion(source, kp_source, kp_motion, driving=driving, source_cache=cache["motion_source"])
        else:
            motion = self.motion(source, kp_source, kp_motion, driving=driving)
        check_output("motion", motion, "motion")
        if edit is not None:
            motion = edit_motion(motion, *edit)
        deformation, occlusion = motion["deformation"], motion["occlusion_map"]
        levels = range(len(features)) if self.warp_levels is None else self.warp_levels
        raw = [features[i] for i in levels]
        # a compensator that warps the raw features itself (with flows it refines) gets no pre-warped ones
        warped = None if warps_features(self.compensator) else [self.warper(f, deformation, occlusion) for f in raw]
        ctx = GenerationContext(
            source=source,
            kp_source=kp_source,
            kp_driving=kp_driving,
            motion=motion,
            features=raw,
            warper=self.warper,
            encoder=self.encoder,
            deformed=self.warper.warp_image(source, deformation),
            driving=driving,
        )
        out: dict[str, Any] = dict(motion)
        out["kp_source"], out["kp_driving"] = kp_source, kp_driving
        out["deformed"] = ctx["deformed"]
        if warped is not None:
            out["warped_features"] = warped
        if self.compensator is not None:
            comp = self.compensator(warped, ctx)
            check_output("compensator", comp, "compensator")
            ctx["compensation"] = comp  # the decoder may use the compensator's other outputs (refined occlusions)
            if "deformed" in comp:  # a compensator that refines the flow gives the source warped by it
                ctx["deformed"] = comp["deformed"]
            out.update({k: v for k, v in comp.items() if k != "features"})
            warped = comp["features"]
            out["compensated_features"] = warped
        dec = self.decoder(warped, ctx)
        check_output("decoder", dec, "decoder")
        out.update(dec)
        return out

    def forward(self, source: Tensor, driving: Tensor | None = None,
                kp_driving: dict[str, Tensor] | None = None) -> dict[str, Any]:
        """Reconstruct ``driving`` from ``source`` (training), or animate with given ``kp_driving``."""
        if kp_driving is None:
            if driving is None:
                raise ValueError("forward needs a driving image or driving keypoints")
            kp_driving = self.detect(driving)
        return self.animate(self.encode_source(source), kp_driving, driving=driving)


def _expand_batch(source, kp_source, features, n):
    """Repeat a batch-1 source cache to ``n`` driving frames."""
    if source.shape[0] != 1:
        raise ValueError(f"source batch {source.shape[0]} does not match driving batch {n}")
    rep = lambda t: t.expand(n, *t.shape[1:])  # noqa: E731
    return rep(source), {k: rep(v) for k, v in kp_source.items()}, [rep(f) for f in features]

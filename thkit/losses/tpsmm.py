"""TPSMM's motion losses (Zhao & Zhang, CVPR 2022, sec. 3.3): the warp loss and the background cycle loss."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from thkit.losses._base import Loss, as_list, check_same_shape
from thkit.registry import LOSSES

Tensor = torch.Tensor


@LOSSES.register_module()
class WarpLoss(Loss):
    """Warp loss (TPSMM sec. 3.3): ``weight * sum_i mean |E_i(D) * O_i - W(E_i(S), flow) * O_i|``.

    ``E_i(D) * O_i`` are the driving frame's encoder features times the occlusion mask of their size, with no
    gradient (official ``InpaintingNetwork.get_encode``; :meth:`thkit.encode.tpsmm.TPSMMEncoder.occluded_features`),
    and ``W(E_i(S), flow) * O_i`` the warped source features with the gradient reaching only the flow (the
    decoder's ``warped_encoder_maps``).  Both lists are fine to coarse and matched level by level.

    Inputs: ``warped`` <- ``warped_encoder_maps``; the target either as ``target`` <-
    ``driving_occluded_features``, or computed here from ``encoder`` (namespace ``encoder``, a part with
    ``occluded_features``), ``driving`` and ``occlusion_map``.  Weight: TPSMM 10.
    """

    default_inputs = {"warped": "warped_encoder_maps", "target": "driving_occluded_features", "encoder": "encoder",
                      "driving": "driving", "occlusion_map": "occlusion_map"}

    def forward(self, warped: Sequence[Tensor], target: Sequence[Tensor] | None = None, encoder=None,
                driving: Tensor | None = None, occlusion_map: Sequence[Tensor] | Tensor | None = None) -> Tensor:
        warped = as_list(warped, "warped")
        if target is None:
            if encoder is None or driving is None or occlusion_map is None or not hasattr(encoder, "occluded_features"):
                raise ValueError("WarpLoss needs the driving features (target), or an encoder with occluded_features "
                                 "plus driving and occlusion_map to compute them")
            target = encoder.occluded_features(driving, occlusion_map)
        target = as_list(target, "target")
        if len(target) != len(warped):
            raise ValueError(f"WarpLoss: {len(warped)} warped feature maps vs {len(target)} driving feature maps")
        total = warped[0].new_zeros(())
        for i, (t, w) in enumerate(zip(target, warped)):
            check_same_shape(w, t, f"WarpLoss level {i} (warped vs driving)")
            total = total + (t.detach() - w).abs().mean()
        return self.weight * total


@LOSSES.register_module()
class BackgroundCycleLoss(Loss):
    """Background cycle loss (TPSMM sec. 3.3, background loss): ``weight * mean |I - A(S<-D) A(D<-S)|`` over (B, 3, 3).

    ``A(S<-D)`` is ``bg_param`` (the background affine predicted from (source, driving)), ``A(D<-S)`` the one
    predicted with the frames swapped: given as ``bg_param_reverse`` or computed with ``bg_predictor(driving,
    source)``.  When ``bg_param`` is absent (no background motion, or before TPSMM's ``bg_start`` epoch) the
    loss is 0.  Inputs: ``bg_param``, ``source``, ``driving``, ``bg_predictor`` (the motion part's
    background predictor).  Weight: TPSMM 10.
    """

    default_inputs = {"bg_param": "bg_param", "source": "source", "driving": "driving",
                      "bg_predictor": "bg_predictor", "bg_param_reverse": "bg_param_reverse"}

    def forward(self, bg_param: Tensor | None = None, source: Tensor | None = None, driving: Tensor | None = None,
                bg_predictor: Callable[[Tensor, Tensor], Tensor] | None = None,
                bg_param_reverse: Tensor | None = None) -> Tensor:
        if bg_param is None:
            ref = source if source is not None else driving
            return ref.new_zeros(()) if ref is not None else torch.zeros(())
        if bg_param_reverse is None:
            if bg_predictor is None or source is None or driving is None:
                raise ValueError("BackgroundCycleLoss needs bg_param_reverse, or bg_predictor with source and driving")
            bg_param_reverse = bg_predictor(driving, source)
        check_same_shape(bg_param, bg_param_reverse, "BackgroundCycleLoss(bg_param, bg_param_reverse)")
        if bg_param.shape[-2:] != (3, 3):
            raise ValueError(f"BackgroundCycleLoss: expected (B, 3, 3) affines, got {tuple(bg_param.shape)}")
        eye = torch.eye(3, dtype=bg_param.dtype, device=bg_param.device)
        return self.weight * (eye - bg_param @ bg_param_reverse).abs().mean()


@LOSSES.register_module()
class KeypointReconstructionLoss(Loss):
    """Keypoint reconstruction (TPSMM's AVD stage, ``train_avd.py`` ``rec_kp``): ``weight * mean |kp - kp_hat|``.

    ``kp_hat`` is what a keypoint-transfer network made of the source keypoints and randomly rescaled driving
    keypoints (``kp_transferred``); ``kp`` the driving frame's own keypoints (``kp_driving``), which it must
    recover.  Weight: TPSMM ``lambda_shift`` 1.
    """

    default_inputs = {"prediction": "kp_transferred", "target": "kp_driving"}

    def forward(self, prediction: dict[str, Tensor] | Tensor, target: dict[str, Tensor] | Tensor) -> Tensor:
        pred = prediction["value"] if isinstance(prediction, dict) else prediction
        tgt = target["value"] if isinstance(target, dict) else target
        check_same_shape(pred, tgt, "KeypointReconstructionLoss(kp_transferred, kp_driving)")
        return self.weight * (tgt.detach() - pred).abs().mean()

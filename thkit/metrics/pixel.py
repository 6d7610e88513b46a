"""Pure-math reconstruction metrics: L1, PSNR, SSIM (no network, fully offline).

All three score each frame on its own, on RGB values mapped to [0, 1] (data range 1), and average the
per-frame scores (FOMM/TPSMM/MRFA ``reconstruction.py``, MCC's basicsr ``calculate_psnr/ssim``, MCNet's
skimage calls all average per-frame values; none pools the squared error over a batch).  Computing on
8-bit frames (MCC reads PNGs) is ``quantize='round'``: the values then equal the uint8 formulas with peak 255
(L1 / 255 for MCC's L1).
"""
from __future__ import annotations

import kornia
import torch

from thkit.metrics.base import PerFrameMetric
from thkit.registry import METRICS

Tensor = torch.Tensor

__all__ = ["L1", "PSNR", "SSIM"]


@METRICS.register_module()
class L1(PerFrameMetric):
    """Mean absolute error per frame, ``mean_{c,y,x} |pred - target|`` on [0, 1] values, averaged over frames.

    FOMM sec. 4 / TPSMM / MRFA "L1" (reported on VoxCeleb as e.g. 0.043 for FOMM).  Lower is better.
    """

    metric_name = "L1"
    higher_is_better = False

    @property
    def convention(self) -> str:
        return ("per frame mean |pred - driving| over C,H,W on RGB in [0,1] (data range 1; = uint8 L1 / 255), "
                "then the mean over frames")

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float]:
        return (pred - ref).abs().mean(dim=(1, 2, 3)).tolist()


@METRICS.register_module()
class PSNR(PerFrameMetric):
    """Peak signal-to-noise ratio per frame, ``10 log10(1 / MSE)`` with peak 1 on [0, 1] RGB (all channels,
    no border crop, not the Y channel), via :func:`kornia.metrics.psnr` on each frame; then the mean of the
    per-frame dB values (a pooled-MSE PSNR over the batch is NOT what the field reports: on 3 frames measured
    29.00 dB per-frame mean vs 24.25 dB pooled).  Identical frames give ``inf`` (as basicsr / skimage).
    Higher is better.
    """

    metric_name = "PSNR"
    higher_is_better = True
    unit = "dB"

    @property
    def convention(self) -> str:
        return ("per frame 10*log10(1/MSE) on RGB in [0,1] (peak 1 = uint8 peak 255), all channels, no border "
                "crop, then the mean of per-frame dB values (not a pooled MSE)")

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float]:
        return [float(kornia.metrics.psnr(p, r, max_val=1.0)) for p, r in zip(pred, ref)]


@METRICS.register_module()
class SSIM(PerFrameMetric):
    """Structural similarity per frame (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5,
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` and data range ``L = 1``, computed per channel on the 'valid'
    region (no padding: the 5-pixel border is not scored) and averaged over channels and pixels; then the mean
    over frames.  This is basicsr's / MCC's ``calculate_ssim`` (on uint8 with L = 255: same numbers with
    ``quantize='round'``) and skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``.  Computed with :func:`kornia.metrics.ssim`
    (``padding='valid'``).  NOT the old ``compare_ssim(multichannel=True)`` on floats that MCNet used, which
    silently took data range 2 and gives much higher values (0.70 vs 0.52 on one measured pair).
    Higher is better.
    """

    metric_name = "SSIM"
    higher_is_better = True

    def __init__(self, *, window_size: int = 11, **kwargs):
        super().__init__(**kwargs)
        if window_size < 3 or window_size % 2 == 0:
            raise ValueError(f"SSIM: window_size must be odd and >= 3, got {window_size}")
        self.window_size = int(window_size)

    @property
    def convention(self) -> str:
        return (f"per frame SSIM, Gaussian {self.window_size}x{self.window_size} window sigma 1.5, data range 1 "
                f"(C1=(0.01)^2, C2=(0.03)^2), per channel on the valid region (no padding), mean over "
                f"channels and pixels, then the mean over frames")

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float]:
        h, w = pred.shape[-2:]
        if min(h, w) < self.window_size:
            raise ValueError(f"SSIM: frames of {h}x{w} are smaller than the {self.window_size}px window")
        smap = kornia.metrics.ssim(pred, ref, self.window_size, max_val=1.0, padding="valid")
        return smap.mean(dim=(1, 2, 3)).tolist()

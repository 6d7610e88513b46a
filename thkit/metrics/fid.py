"""Fréchet Inception Distance (Heusel et al., NeurIPS 2017) with the pytorch-fid Inception-v3.

``FID = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` over the 2048-d pool3 features of the real
and generated sets (means ``mu``, unbiased covariances ``S``).

The network is the TensorFlow 2015-12-05 Inception-v3 as ported by pytorch-fid
(``pt_inception-2015-12-05-6726825d.pth``): torchvision's Inception-v3 layout with four differences in the
mixed blocks (3x3 average pools that do not count the zero padding in 5b-5d, 6b-6e and 7b, and a max pool in
the last block 7c).  Inputs are resized to 299x299 (bilinear, ``align_corners=False``, no antialias) and
mapped from [0, 1] to [-1, 1], exactly like ``pytorch_fid.InceptionV3(resize_input=True,
normalize_input=True)``.  The test checks the features against pytorch-fid with the same weights.
torchmetrics/torch-fidelity use the same TF weights (``weights-inception-2015-12-05-6726825d.pth``) with a
slightly different resize; their values differ from pytorch-fid's in the decimals.

Which set is "real" is a protocol choice: ``reference='target'`` (driving frames, same-identity) or
``'source'`` (MCC compares the folder of source images, one per generated frame, with the results).
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv_inception

from thkit.errors import CheckpointError
from thkit.metrics.base import Metric
from thkit.metrics.weights import WeightsSpec, load_state_dict_file, resolve_weights
from thkit.registry import METRICS

Tensor = torch.Tensor

__all__ = ["FID", "FIDInceptionV3", "frechet_distance", "frechet_distance_from_features", "FID_WEIGHTS"]

FID_WEIGHTS = WeightsSpec(
    "pt_inception-2015-12-05-6726825d.pth",
    "pytorch-fid's port of the TensorFlow FID Inception-v3 (2015-12-05)",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
)


def _avg3_no_pad_count(x: Tensor) -> Tensor:
    # TensorFlow's average pool ignores the zero padding
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _MixedA(tv_inception.InceptionA):
    """torchvision InceptionA (Mixed_5b-5d) with TensorFlow's padding-exclusive average pool."""

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3_no_pad_count(x))], 1)


class _MixedC(tv_inception.InceptionC):
    """torchvision InceptionC (Mixed_6b-6e) with TensorFlow's padding-exclusive average pool."""

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            bd = m(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg3_no_pad_count(x))], 1)


class _MixedE(tv_inception.InceptionE):
    """torchvision InceptionE (Mixed_7b / 7c); the pool branch is TF's padding-exclusive average pool (7b) or
    a 3x3 max pool (7c, a quirk of the TF graph that pytorch-fid reproduces)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__(in_channels)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _avg3_no_pad_count(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """pool3 features (B, 2048) of the FID Inception-v3; ``forward`` takes [0, 1] images of any size.

    Module names follow torchvision's ``Inception3`` so ``pt_inception-2015-12-05-6726825d.pth`` loads key for
    key (its 1008-way ``fc`` is accepted and ignored).
    """

    def __init__(self, state_dict: dict[str, Tensor] | None = None, input_size: int | None = 299):
        super().__init__()
        #: inputs are resized to ``input_size`` squared (299 for standard FID; ``None``: no resize, >= 75 px)
        self.input_size = input_size
        conv = tv_inception.BasicConv2d
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b = _MixedA(192, pool_features=32)
        self.Mixed_5c = _MixedA(256, pool_features=64)
        self.Mixed_5d = _MixedA(288, pool_features=64)
        self.Mixed_6a = tv_inception.InceptionB(288)
        self.Mixed_6b = _MixedC(768, channels_7x7=128)
        self.Mixed_6c = _MixedC(768, channels_7x7=160)
        self.Mixed_6d = _MixedC(768, channels_7x7=160)
        self.Mixed_6e = _MixedC(768, channels_7x7=192)
        self.Mixed_7a = tv_inception.InceptionD(768)
        self.Mixed_7b = _MixedE(1280, pool="avg")
        self.Mixed_7c = _MixedE(2048, pool="max")
        if state_dict is not None:
            self.load_fid_state(state_dict)
        self.requires_grad_(False)
        self.eval()

    def load_fid_state(self, sd: dict[str, Tensor]) -> None:
        want = self.state_dict()
        missing = [k for k in want if k not in sd]
        extra = [k for k in sd if k not in want and not k.startswith("fc.")]
        if missing or extra:
            raise CheckpointError(
                "FID: the Inception file does not match pytorch-fid's pt_inception layout: "
                + (f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}" if extra else ""))
        for k, v in want.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise CheckpointError(f"FID: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")
        self.load_state_dict({k: sd[k] for k in want})

    def forward(self, x: Tensor) -> Tensor:
        if self.input_size is not None:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))`` in float64.

    ``Tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix ``S1^(1/2) S2 S1^(1/2)`` (similar to ``S1 S2``), with two symmetric eigendecompositions: the same
    quantity pytorch-fid gets from ``scipy.linalg.sqrtm(S1 S2)`` (agreement to ~1e-9 relative on
    well-conditioned covariances, tested), but seconds instead of minutes at 2048 dimensions on a CPU, and
    stable when the covariances are rank-deficient (tiny negative eigenvalues are clipped to 0).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"frechet_distance: shapes differ ({mu1.shape} vs {mu2.shape}, {s1.shape} vs {s2.shape})")
    diff = mu1 - mu2
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)).sum())
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID of two feature sets ``(N1, D)`` and ``(N2, D)`` (unbiased covariances), in float64.

    With centred, scaled features ``A = (f1 - mu1) / sqrt(N1 - 1)`` and ``B`` likewise, ``S1 = A^T A`` and
    ``S2 = B^T B``; the non-zero eigenvalues of ``S1 S2`` are the squared singular values of ``A B^T``, so
    ``Tr((S1 S2)^(1/2))`` is the nuclear norm of the small ``N1 x N2`` matrix ``A B^T``.  That exact identity
    is used when both sets are smaller than ``D`` (test-sized sets); otherwise :func:`frechet_distance` on
    the ``D x D`` covariances.
    """
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    if max(len(f1), len(f2)) > f1.shape[1]:
        return frechet_distance(mu1, np.cov(f1, rowvar=False), mu2, np.cov(f2, rowvar=False))
    a = (f1 - mu1) / math.sqrt(len(f1) - 1)
    b = (f2 - mu2) / math.sqrt(len(f2) - 1)
    diff = mu1 - mu2
    nuclear = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * nuclear)


@METRICS.register_module()
class FID(Metric):
    """FID between the generated frames and a reference set (``reference='target'`` or ``'source'``).

    One value for the whole set (no per-frame scores, nothing skipped).  Lower is better.  With fewer frames
    than feature dimensions (2048) the covariances are rank-deficient: the value is biased upwards and only
    comparable at the same set size (the field evaluates thousands of frames); ``compute`` warns below 2048.

    Args:
        weights: ``pt_inception-2015-12-05-6726825d.pth`` (or a folder holding it); default
            ``$THKIT_WEIGHTS_DIR/pt_inception-2015-12-05-6726825d.pth``.
        reference: ``'target'`` (driving frames) or ``'source'`` (MCC).
        input_size: the Inception input size; 299 is standard FID (anything else gives non-standard values and
            is meant for fast tests).
    """

    metric_name = "FID"
    higher_is_better = False
    backend = "pytorch-fid-inception"

    def __init__(self, *, weights: str | os.PathLike | None = None, reference: str = "target",
                 check_hash: bool = True, input_size: int = 299, **kwargs):
        super().__init__(**kwargs)
        if reference not in ("target", "source"):
            raise ValueError(f"FID: reference must be 'target' or 'source', got {reference!r}")
        self.reference = reference
        if reference == "source":
            self.needs_target = False
        path = resolve_weights(FID_WEIGHTS, weights, metric="FID", arg="weights", check_hash=check_hash)
        if int(input_size) < 75:
            raise ValueError(f"FID: input_size must be >= 75 (Inception-v3's smallest input), got {input_size}")
        self.input_size = int(input_size)
        if self.input_size != 299:
            self.paper_exact = False
        self.network = FIDInceptionV3(load_state_dict_file(path, metric="FID"), self.input_size).to(self.device)
        self.weights_files = {"inception": str(path)}

    @property
    def convention(self) -> str:
        ref = "driving frames" if self.reference == "target" else "source images (one per generated frame, MCC)"
        return (f"Frechet distance of 2048-d pool3 features (pytorch-fid TF Inception-v3, bilinear resize to "
                f"{self.input_size},"
                f" [0,1]->[-1,1]) between all generated frames and the {ref}; unbiased covariances, float64")

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["reference"] = self.reference
        return d

    def _update(self, pred, target, source, videos):
        ref = target if self.reference == "target" else source
        if ref is None:
            raise ValueError(f"FID: reference={self.reference!r} needs {self.reference}= in update()")
        for kind, x in (("fake", pred), ("real", ref)):
            feats = self.network(x).double().cpu().numpy()
            self.results.extend({"kind": kind, "feat": f} for f in feats)

    def compute_metrics(self, results: list) -> dict[str, Any]:
        fake = np.stack([r["feat"] for r in results if r["kind"] == "fake"]) if results else np.zeros((0, 2048))
        real = np.stack([r["feat"] for r in results if r["kind"] == "real"]) if results else np.zeros((0, 2048))
        if len(fake) < 2 or len(real) < 2:
            raise ValueError(f"FID needs at least 2 generated and 2 reference frames, got {len(fake)} and {len(real)}")
        if min(len(fake), len(real)) < fake.shape[1]:
            warnings.warn(f"FID on {len(fake)} frames (< {fake.shape[1]} feature dims): covariances are "
                          f"rank-deficient, so the value is biased and only comparable at the same set size",
                          stacklevel=2)
        value = frechet_distance_from_features(fake, real)
        if not math.isfinite(value):
            raise ValueError("FID: the distance is not finite (degenerate features?)")
        return {"value": value, "frames": int(len(fake)), "reference_frames": int(len(real)), "skipped": 0}

"""Identity metrics: AED (OpenFace embedding distance) and CSIM (ArcFace cosine similarity).

**AED** ("average euclidean distance", FOMM sec. 4; AliaksandrSiarohin/pose-evaluation ``extract.py`` +
``cmp.py``).  The network is CMU OpenFace nn4.small2.v1 as ported to PyTorch by thnkim/OpenFacePytorch
(``openface.pth``, Apache-2.0; 128-d unit-length embedding).  Exactly as the script does: the whole frame
(no face detection, no alignment) as 8-bit RGB, channels flipped to BGR, resized to 96x96 with
``skimage.transform.resize`` (bilinear, anti-aliased, to floats in [0, 1]), embedded; per frame the **sum of
squared differences** of the two embeddings (a squared L2 distance, despite the name; before pose-evaluation
commit b7ef284 it was a mean absolute difference), then the mean over frames.  Same-identity: prediction vs
driving (``reference='target'``); MCC's cross-identity AED: vs source (``reference='source'``).

**CSIM** (cosine similarity of identity embeddings, prediction vs **source**).  The network here is an
insightface ``arcface_torch`` IResNet (18/34/50/100, read from the file) on the whole frame, optionally
centre-cropped, resized to 112x112 and mapped to [-1, 1].  This is NOT any paper's exact pipeline:
MCC runs insightface ``antelopev2`` (SCRFD detection + 5-point alignment + an R100 trained on Glint360K, ONNX),
DaGAN facenet-pytorch (MTCNN + InceptionResnetV1-vggface2), MCNet GFPGAN's ArcFace-ResNet18 on grey 128x128
frames.  ``paper_exact`` is therefore False; compare CSIM values only within thkit.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thkit.errors import CheckpointError
from thkit.metrics.base import PerFrameMetric, to_uint8_hwc
from thkit.metrics.weights import WeightsSpec, load_state_dict_file, missing_package_error, resolve_weights
from thkit.registry import METRICS

Tensor = torch.Tensor

__all__ = ["AED", "CSIM", "OpenFaceNet", "IResNet", "OPENFACE_WEIGHTS", "ARCFACE_WEIGHTS"]

OPENFACE_WEIGHTS = WeightsSpec(
    "openface.pth",
    "CMU OpenFace nn4.small2.v1 converted to PyTorch by OpenFacePytorch (Apache-2.0)",
    "https://github.com/thnkim/OpenFacePytorch (file openface.pth; copies also ship in the MCNet and MCC "
    "repositories under evaluation/OpenFacePytorch/ and basicsr/metrics/OpenFacePytorch/)",
    note="The original Torch7 model is https://storage.cmusatyalab.org/openface-models/nn4.small2.v1.t7.",
)
ARCFACE_WEIGHTS = WeightsSpec(
    "arcface_r100_glint360k_backbone.pth",
    "an insightface arcface_torch IResNet state dict (file backbone.pth of a model-zoo entry, e.g. "
    "'glint360k_cosface_r100_fp16_0.1', the architecture and training set of antelopev2's glintr100.onnx; any "
    "IResNet-18/34/50/100 backbone.pth works when passed as weights=) renamed to this name; insightface "
    "models are for non-commercial research use",
    "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch (model zoo)",
)


# ------------------------------------------------------------------------------------------------ OpenFace
class _OpenFaceInception(nn.Module):
    """An nn4.small2 inception module in OpenFacePytorch's layout.

    Branches, in order: for each ``(k, stride, out)``: 1x1 conv to ``reduce[i]`` -> BN -> ReLU -> kxk conv ->
    BN -> ReLU; then ``pool`` (optionally followed by 1x1 conv / BN / ReLU to ``reduce[n]``); then an optional
    1x1 conv branch to ``reduce[n + 1]``.  Branch outputs are zero-padded (centred) to the largest spatial size
    and concatenated along channels.  Submodule names (``seq_list.<b>.<i>_<op>``) match ``openface.pth``.
    """

    def __init__(self, cin: int, kernels: Sequence[int], strides: Sequence[int], outs: Sequence[int],
                 reduces: Sequence[int | None], pool: nn.Module):
        super().__init__()
        branches: list[nn.Sequential] = []
        for k, s, o, r in zip(kernels, strides, outs, reduces):
            branches.append(nn.Sequential(OrderedDict([
                ("1_conv", nn.Conv2d(cin, r, 1)), ("2_bn", nn.BatchNorm2d(r)), ("3_relu", nn.ReLU()),
                ("4_conv", nn.Conv2d(r, o, k, stride=s, padding=k // 2)), ("5_bn", nn.BatchNorm2d(o)),
                ("6_relu", nn.ReLU())])))
        n = len(kernels)
        pool_ops: list[tuple[str, nn.Module]] = [("1_pool", pool)]
        if len(reduces) > n and reduces[n] is not None:
            pool_ops += [("2_conv", nn.Conv2d(cin, reduces[n], 1)), ("3_bn", nn.BatchNorm2d(reduces[n])),
                         ("4_relu", nn.ReLU())]
        branches.append(nn.Sequential(OrderedDict(pool_ops)))
        if len(reduces) > n + 1 and reduces[n + 1] is not None:
            r = reduces[n + 1]
            branches.append(nn.Sequential(OrderedDict([
                ("1_conv", nn.Conv2d(cin, r, 1)), ("2_bn", nn.BatchNorm2d(r)), ("3_relu", nn.ReLU())])))
        self.seq_list = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        ys = [b(x) for b in self.seq_list]
        th = max(y.shape[2] for y in ys)
        tw = max(y.shape[3] for y in ys)
        out = []
        for y in ys:
            dh, dw = th - y.shape[2], tw - y.shape[3]
            out.append(F.pad(y, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)))
        return torch.cat(out, 1)


class OpenFaceNet(nn.Module):
    """OpenFace nn4.small2.v1 (Amos et al. 2016) in OpenFacePytorch's module layout; ``forward`` takes
    ``(B, 3, 96, 96)`` BGR floats in [0, 1] and returns unit-length 128-d embeddings
    (``x / sqrt(|x|^2 + 1e-6)``).  The cross-map LRNs are ``nn.LocalResponseNorm(5, 1e-4, 0.75, 1)``, which
    OpenFacePytorch falls back to on every PyTorch >= 1.0 (its legacy LRN needs ``torch.legacy``)."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.layer2 = nn.BatchNorm2d(64)
        self.layer3 = nn.ReLU()
        self.layer4 = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer5 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.layer6 = nn.Conv2d(64, 64, 1)
        self.layer7 = nn.BatchNorm2d(64)
        self.layer8 = nn.ReLU()
        self.layer9 = nn.Conv2d(64, 192, 3, padding=1)
        self.layer10 = nn.BatchNorm2d(192)
        self.layer11 = nn.ReLU()
        self.layer12 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.layer13 = nn.MaxPool2d(3, stride=2, padding=1)
        maxp = lambda: nn.MaxPool2d(3, stride=2)  # noqa: E731
        lpp = lambda: nn.LPPool2d(2, 3, stride=3)  # noqa: E731
        I = _OpenFaceInception  # noqa: E741
        self.layer14 = I(192, (3, 5), (1, 1), (128, 32), (96, 16, 32, 64), maxp())    # inception 3a
        self.layer15 = I(256, (3, 5), (1, 1), (128, 64), (96, 32, 64, 64), lpp())     # 3b
        self.layer16 = I(320, (3, 5), (2, 2), (256, 64), (128, 32, None, None), maxp())  # 3c
        self.layer17 = I(640, (3, 5), (1, 1), (192, 64), (96, 32, 128, 256), lpp())   # 4a
        self.layer18 = I(640, (3, 5), (2, 2), (256, 128), (160, 64, None, None), maxp())  # 4e
        self.layer19 = I(1024, (3,), (1,), (384,), (96, 96, 256), lpp())              # 5a
        self.layer21 = I(736, (3,), (1,), (384,), (96, 96, 256), maxp())              # 5b
        self.layer22 = nn.AvgPool2d(3, stride=1)
        self.layer25 = nn.Linear(736, 128)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != (96, 96):
            raise ValueError(f"OpenFaceNet expects 96x96 inputs, got {tuple(x.shape[-2:])}")
        for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22):
            x = getattr(self, f"layer{i}")(x)
        x = self.layer25(x.flatten(1))
        return x / torch.sqrt((x ** 2).sum(dim=1, keepdim=True) + 1e-6)

    def load_openface(self, sd: dict[str, Tensor]) -> None:
        """Load ``openface.pth`` (old files lack BatchNorm's ``num_batches_tracked``: those are filled)."""
        want = self.state_dict()
        missing = [k for k in want if k not in sd and not k.endswith("num_batches_tracked")]
        extra = [k for k in sd if k not in want]
        if missing or extra:
            raise CheckpointError("AED: the OpenFace file does not match OpenFacePytorch's openface.pth layout: "
                                  f"missing {missing[:5]}, unexpected {extra[:5]}")
        full = {k: sd.get(k, v) for k, v in want.items()}
        for k, v in want.items():
            if tuple(full[k].shape) != tuple(v.shape):
                raise CheckpointError(f"AED: {k} has shape {tuple(full[k].shape)}, expected {tuple(v.shape)}")
        self.load_state_dict({k: v.to(want[k].dtype) for k, v in full.items()})


def _skimage_resize():
    try:
        from skimage.transform import resize
    except ImportError:
        raise missing_package_error("AED", "scikit-image", "pip install scikit-image",
                                    "the official script resizes frames to 96x96 with skimage") from None
    return resize


@METRICS.register_module()
class AED(PerFrameMetric):
    """Average (squared) Euclidean distance of OpenFace identity embeddings; lower is better.

    Args:
        weights: ``openface.pth`` (or a folder holding it); default ``$THKIT_WEIGHTS_DIR/openface.pth``.
        reference: ``'target'`` (driving, same-identity reconstruction) or ``'source'`` (cross-identity).
        distance: ``'sum_sq'`` (final pose-evaluation ``cmp.py``, the default) or ``'mean_abs'`` (its version
            before commit b7ef284).
    """

    metric_name = "AED"
    higher_is_better = False
    backend = "openface-nn4.small2"
    reference_choices = ("target", "source")

    def __init__(self, *, weights: str | os.PathLike | None = None, reference: str = "target",
                 distance: str = "sum_sq", **kwargs):
        super().__init__(reference=reference, **kwargs)
        if distance not in ("sum_sq", "mean_abs"):
            raise ValueError(f"AED: distance must be 'sum_sq' or 'mean_abs', got {distance!r}")
        self.distance = distance
        self._resize = _skimage_resize()
        path = resolve_weights(OPENFACE_WEIGHTS, weights, metric="AED", arg="weights")
        self.network = OpenFaceNet()
        self.network.load_openface(load_state_dict_file(path, metric="AED"))
        self.network.to(self.device).eval().requires_grad_(False)
        self.weights_files = {"openface": str(path)}

    @property
    def convention(self) -> str:
        d = "sum of squared differences" if self.distance == "sum_sq" else "mean absolute difference"
        return (f"per frame {d} of OpenFace nn4.small2 128-d unit embeddings of the WHOLE frame (8-bit RGB -> "
                f"BGR -> skimage resize 96x96, no face detection), pred vs "
                f"{'driving' if self.reference == 'target' else 'source'}, then the mean over frames")

    def embed(self, frames: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, 128)`` as pose-evaluation's ``extract_face_id`` computes it."""
        q = "floor" if self.quantize == "floor" else "round"
        imgs = to_uint8_hwc(frames, q)[..., ::-1]  # RGB -> BGR
        small = np.stack([self._resize(im, (96, 96)) for im in imgs]).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(small.transpose(0, 3, 1, 2))).to(self.device)
        return self.network(x)

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float]:
        d = self.embed(pred).double() - self.embed(ref).double()
        return (d.pow(2).sum(1) if self.distance == "sum_sq" else d.abs().mean(1)).tolist()


# ------------------------------------------------------------------------------------------------- ArcFace
class _IBlock(nn.Module):
    """IResNet basic block: BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (stride) -> BN, plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace "improved" ResNet (Deng et al., CVPR 2019; insightface ``arcface_torch`` layout) for 112x112
    inputs in [-1, 1]; returns the (unnormalised) ``num_features``-d embedding.

    ``layers``: blocks per stage, e.g. (2,2,2,2) r18, (3,4,6,3) r34, (3,4,14,3) r50, (3,13,30,3) r100.
    """

    ARCHS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3),
             "r200": (6, 26, 60, 6)}

    def __init__(self, layers: Sequence[int], num_features: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, cout) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            blocks = [_IBlock(cin, cout, 2)] + [_IBlock(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    @staticmethod
    def layers_from_state_dict(sd: dict[str, Tensor]) -> tuple[int, ...]:
        counts = []
        for i in range(1, 5):
            idx = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{i}\.(\d+)\.", k))}
            if not idx:
                raise CheckpointError(f"CSIM: the ArcFace file has no layer{i}.* keys (not an arcface_torch IResNet "
                                      f"state dict?)")
            counts.append(max(idx) + 1)
        return tuple(counts)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.bn2(x).flatten(1)))


@METRICS.register_module()
class CSIM(PerFrameMetric):
    """Cosine similarity of ArcFace identity embeddings, prediction vs source (default); higher is better.
    ``paper_exact = False`` (see the module docstring: no detection / alignment, another ArcFace file).

    Args:
        weights: an arcface_torch IResNet ``backbone.pth`` (depth read from the file); default
            ``$THKIT_WEIGHTS_DIR/arcface_r100_glint360k_backbone.pth``.
        reference: ``'source'`` (cross-identity, the usual CSIM) or ``'target'``.
        crop: centre-crop fraction of the frame before resizing to 112 (1.0: whole frame).
    """

    metric_name = "CSIM"
    higher_is_better = True
    backend = "arcface-iresnet-whole-frame"
    paper_exact = False
    reference_choices = ("source", "target")

    def __init__(self, *, weights: str | os.PathLike | None = None, reference: str = "source", crop: float = 1.0,
                 **kwargs):
        super().__init__(reference=reference, **kwargs)
        if not 0.1 <= float(crop) <= 1.0:
            raise ValueError(f"CSIM: crop must be a fraction in [0.1, 1], got {crop}")
        self.crop = float(crop)
        path = resolve_weights(ARCFACE_WEIGHTS, weights, metric="CSIM", arg="weights")
        sd = load_state_dict_file(path, metric="CSIM")
        layers = IResNet.layers_from_state_dict(sd)
        if "fc.weight" not in sd:
            raise CheckpointError(f"CSIM: {path} has no fc.weight (not an arcface_torch IResNet state dict)")
        self.network = IResNet(layers, num_features=sd["fc.weight"].shape[0])
        want = self.network.state_dict()
        missing = [k for k in want if k not in sd and not k.endswith("num_batches_tracked")]
        extra = [k for k in sd if k not in want]
        if missing or extra:
            raise CheckpointError(f"CSIM: {path} does not match an IResNet{layers}: missing {missing[:5]}, "
                                  f"unexpected {extra[:5]}")
        self.network.load_state_dict({k: sd.get(k, v) for k, v in want.items()})
        self.network.to(self.device).eval().requires_grad_(False)
        self.arch = next((n for n, ls in IResNet.ARCHS.items() if ls == layers), str(layers))
        self.backend = f"arcface-iresnet-{self.arch}-whole-frame"
        self.weights_files = {"arcface": str(path)}

    @property
    def convention(self) -> str:
        what = "whole frame" if self.crop == 1.0 else f"centre {self.crop:g} crop"
        return (f"per frame cosine similarity of ArcFace IResNet-{self.arch} embeddings ({what} resized to 112x112,"
                f" [-1,1], no face detection/alignment), pred vs "
                f"{'source' if self.reference == 'source' else 'driving'}, then the mean over frames; NOT the "
                f"papers' pipelines (MCC: antelopev2 with SCRFD alignment)")

    def embed(self, frames: Tensor) -> Tensor:
        x = frames
        if self.crop < 1.0:
            h, w = x.shape[-2:]
            ch, cw = max(1, round(h * self.crop)), max(1, round(w * self.crop))
            t, l = (h - ch) // 2, (w - cw) // 2
            x = x[..., t:t + ch, l:l + cw]
        x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(self.network((x - 0.5) / 0.5), dim=1)

    def score_frames(self, pred: Tensor, ref: Tensor) -> list[float]:
        return (self.embed(pred) * self.embed(ref)).sum(1).tolist()

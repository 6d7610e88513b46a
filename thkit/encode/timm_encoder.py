"""Any timm backbone as a thkit encoder (``features_only=True``), so a recipe can swap the appearance encoder.

Weights are never downloaded: ``pretrained_path`` names a local file (a timm / torchvision state dict of the
classification model, or of the features-only model), loaded through timm's own ``pretrained_cfg_overlay`` so
the usual key filtering applies.  Without it the backbone is randomly initialised.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from thkit.interfaces import Encoder
from thkit.registry import ENCODERS
from thkit.value_range import as_range, to_unit

Tensor = torch.Tensor


@ENCODERS.register_module()
class TimmEncoder(Encoder):
    """A timm model created with ``features_only=True``: ``forward(image) -> list`` of its feature maps, fine to
    coarse (timm's order), ``out_channels`` / ``out_strides`` from its ``feature_info``.

    Args:
        model_name: a timm model name (``timm.list_models()``), e.g. ``'resnet18'``, ``'convnext_tiny'``.
        out_indices: which of the backbone's feature levels to return (timm's ``out_indices``; ``None`` = all).
        in_channels: image channels (timm's ``in_chans``).
        pretrained_path: local weights file; ``None`` = random initialisation (nothing is downloaded).
        input_range: the value range images arrive in (SMAC ``(-1, 1)``); with ``normalize`` they are mapped to
            ``[0, 1]`` and standardised with the model's ``pretrained_cfg`` mean / std, as timm's weights expect.
        normalize: apply that standardisation (default: only when pretrained weights are loaded).
        model_kwargs: further ``timm.create_model`` arguments (``drop_path_rate``, ``output_stride``, ...).
    """

    def __init__(self, model_name: str, out_indices: Sequence[int] | None = None, in_channels: int = 3,
                 pretrained_path: str | os.PathLike | None = None, input_range: Sequence[float] = (0.0, 1.0),
                 normalize: bool | None = None, model_kwargs: dict | None = None):
        super().__init__()
        import timm

        if not timm.is_model(model_name):
            from thkit.errors import suggest

            raise ValueError(f"unknown timm model {model_name!r}; {suggest(model_name, timm.list_models())}")
        kwargs = dict(model_kwargs or {})
        kwargs.update(features_only=True, in_chans=in_channels)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
        if pretrained_path is not None:
            path = Path(pretrained_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"TimmEncoder: pretrained_path {str(path)!r} is not a file (weights are "
                                        f"only read from a local path, never downloaded)")
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        else:
            kwargs["pretrained"] = False
        self.model_name = model_name
        self.model = timm.create_model(model_name, **kwargs)
        info = self.model.feature_info
        self.out_channels = list(info.channels())
        self.out_strides = list(info.reduction())
        self.input_range = as_range(input_range)
        self.normalize = (pretrained_path is not None) if normalize is None else bool(normalize)
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        if len(mean) != in_channels:
            mean, std = (sum(mean) / len(mean),) * in_channels, (sum(std) / len(std),) * in_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, out_channels={self.out_channels}, out_strides={self.out_strides}"

    def forward(self, image: Tensor) -> list[Tensor]:
        x = image
        if self.normalize:
            x = to_unit(x, self.input_range)
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return list(self.model(x))

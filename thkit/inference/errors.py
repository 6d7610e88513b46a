"""Errors of the inference commands (one line each when printed by ``thkit``)."""
from __future__ import annotations

import os
from pathlib import Path

from thkit.errors import ThkitError

__all__ = ["InferenceError", "InputFileError", "VideoDecodeError", "NoFaceError", "VideoWriteError", "MetricSetupError",
           "existing_file"]


class InferenceError(ThkitError):
    """An inference or evaluation run cannot go on (bad option combination, unavailable device, ...)."""


class InputFileError(InferenceError):
    """An input file is missing or cannot be read (source image, driving video, pairs list)."""


class VideoDecodeError(InputFileError):
    """A video file exists but cannot be opened or decoded."""


class NoFaceError(InferenceError):
    """Face cropping was asked for, but the face detector found no face."""


class VideoWriteError(InferenceError):
    """The output video cannot be written (unknown container, codec refused the frames, ...)."""


class MetricSetupError(InferenceError):
    """A metric asked for explicitly cannot run (unknown name, missing weights file)."""


def existing_file(path: str | os.PathLike, what: str, kind: str) -> Path:
    """``path`` as a ``Path``; :class:`InputFileError` naming ``what`` when it does not exist or is a folder
    (``kind``: what was expected instead, e.g. ``'an image file'``)."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{what} {p} does not exist")
    if p.is_dir():
        raise InputFileError(f"{what} {p} is a folder, expected {kind}")
    return p

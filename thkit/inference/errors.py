"""Errors of the inference commands (one line each when printed by ``thkit``)."""
from __future__ import annotations

from thkit.errors import ThkitError

__all__ = ["InferenceError", "InputFileError", "VideoDecodeError", "NoFaceError", "VideoWriteError", "MetricSetupError"]


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

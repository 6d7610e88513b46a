"""Video input and output for inference: :mod:`thkit.video`, the one PyAV module of thkit (datasets use it too).

The names stay importable from here for existing callers; new code imports :mod:`thkit.video`.
"""
from __future__ import annotations

from thkit.video import (  # noqa: F401 - re-exported (the private names are used by thkit.inference.evaluate)
    OUTPUT_FORMATS,
    BackgroundIterator,
    VideoInfo,
    VideoWriter,
    _av_message,
    _default_permissions,
    iter_frames,
    map_frames,
    probe_video,
)

__all__ = ["VideoInfo", "probe_video", "iter_frames", "BackgroundIterator", "VideoWriter", "OUTPUT_FORMATS",
           "map_frames"]

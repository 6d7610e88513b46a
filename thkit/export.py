"""ONNX export of a talking-head model for streaming inference, and an onnxruntime stand-in for the model.

A model is written as the three graphs of the streaming path (:mod:`thkit.inference.stream`; what
:meth:`~thkit.models.talking_head.TalkingHeadModel.encode_source`, ``detect`` and ``animate`` compute):

* ``source.onnx``: the source image ``(1, C, H, W)`` -> the per-video cache (source keypoints, encoder features,
  the motion estimator's source-only inputs), one output per tensor, named ``cache.<path>``
  (``cache.kp_source.value``, ``cache.features.0``, ``cache.motion_source.image``, ...);
* ``keypoints.onnx``: a driving frame ``image`` ``(1, C, H, W)`` -> its keypoints ``kp.value`` (and
  ``kp.jacobian``, ...);
* ``frame.onnx``: the cache tensors + the keypoints to animate with (``kp.*``, after motion transfer) ->
  ``prediction`` ``(1, C, H, W)``.

Motion transfer (:class:`~thkit.inference.stream.MotionTransfer`: the first frame's keypoints, the adapt-scale
factor from two convex hulls) stays on the host, as it is per-video state and scipy work.  The graphs have batch
1 and the model's image size; they are made by torch's TorchScript exporter (``torch.onnx.export(...,
dynamo=False)``, opset :data:`OPSET`), which needs neither ``onnx`` nor ``onnxscript``.  Two operators have no
standard ONNX form and are written as onnxruntime's ``com.microsoft::Inverse`` (so the graphs run on
onnxruntime): ``torch.inverse`` of FOMM's 2x2 keypoint Jacobians (``sparse_motions``, FOMM eq. 4) and
``torch.linalg.solve`` of TPSMM's thin-plate-spline system (written ``Inverse(A) @ B``).  ``torch.linspace`` of
constant ends (SMAC's flow grid) is written as the constant torch computes, in its dtype (the built-in rule makes
float64 values, which onnxruntime refuses to mix with float32 ones).

:class:`OnnxModel` runs the three graphs with onnxruntime and offers the model's ``encode_source`` / ``detect`` /
``animate``, so :class:`~thkit.inference.stream.StreamingAnimator` (and ``thkit animate --backend onnxruntime``)
drives it unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.errors import ExportError
from thkit.fileio import atomic_write
from thkit.warp.edit import EDIT_KEYS

Tensor = torch.Tensor

__all__ = ["BACKENDS", "CACHE_ENV", "ExportError", "OPSET", "GRAPHS", "OnnxModel", "cache_dir",
           "cached_export", "check_backend", "compare_with_torch", "export_key", "export_onnx", "onnx_graphs",
           "require_onnxruntime", "session_options"]

#: ONNX opset of the exported graphs
OPSET = 17
#: the graphs of an export, in the order they run
GRAPHS = ("source", "keypoints", "frame")
#: the graphs that run once per driving frame: with ``OnnxModel(nnpack=True)`` their wide 3x3 convolutions run by
#: NNPACK (:mod:`thkit.nnpack`); the source graph runs once per video
NNPACK_GRAPHS = ("keypoints", "frame")
#: the description file written next to the graphs
SPEC_FILE = "onnx.json"
FORMAT = "thkit-onnx/1"
#: the folder of the export cache (:func:`cache_dir`); ``off`` (or ``0``, ``no``, ``false``, empty) turns it off
CACHE_ENV = "THKIT_ONNX_CACHE"
#: what runs a model's streaming path: torch itself, or its ONNX export on onnxruntime (``--backend``)
BACKENDS = ("torch", "onnxruntime")


#: why a warp-level motion edit cannot run on the onnxruntime backend (one line)
WARP_EDIT_REFUSED = ("the ONNX frame graph does not compose a warp-level motion edit (the recipe's "
                     "control.realise='warp'): animate with --backend torch, or pass --cfg-options "
                     "control.realise=keypoints")


def require_onnxruntime():
    """The ``onnxruntime`` module, or :class:`ExportError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ExportError("the onnxruntime backend needs onnxruntime, which is not installed: "
                          "pip install 'thkit[onnx]'") from e
    return onnxruntime


# --------------------------------------------------------------------------------------------------------
# nested dicts / lists of tensors <-> named flat tensors
# --------------------------------------------------------------------------------------------------------
def flatten(obj: Any, prefix: str) -> list[tuple[str, Tensor]]:
    """``(name, tensor)`` for each tensor of nested dicts / lists, named by its path (``kp_source.value``,
    ``features.0``); ``None`` leaves are skipped; anything else is an :class:`ExportError` naming its path."""
    out: list[tuple[str, Tensor]] = []

    def walk(o: Any, name: str) -> None:
        if isinstance(o, Tensor):
            out.append((name, o))
        elif isinstance(o, Mapping):
            for k, v in o.items():
                walk(v, f"{name}.{k}")
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{name}.{i}")
        elif o is not None:
            raise ExportError(f"{name} is a {type(o).__name__}; only tensors (in dicts and lists) can be graph "
                              f"inputs or outputs")

    walk(obj, prefix)
    return out


def structure(obj: Any) -> Any:
    """The nesting of ``obj`` with each tensor replaced by ``True`` and ``None`` kept (JSON data)."""
    if isinstance(obj, Tensor):
        return True
    if isinstance(obj, Mapping):
        return {"dict": [[k, structure(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list": [structure(v) for v in obj]}
    return None


def unflatten(spec: Any, tensors: Iterator[Any]) -> Any:
    """Rebuild the nesting described by :func:`structure`, taking tensors from ``tensors`` in order."""
    if spec is True:
        return next(tensors)
    if spec is None:
        return None
    if "dict" in spec:
        return {k: unflatten(v, tensors) for k, v in spec["dict"]}
    return [unflatten(v, tensors) for v in spec["list"]]


# --------------------------------------------------------------------------------------------------------
# the graphs
# --------------------------------------------------------------------------------------------------------
class _SourceGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, source: Tensor) -> tuple[Tensor, ...]:
        return tuple(t for _, t in flatten(self.model.encode_source(source), "cache"))


class _KeypointGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        return tuple(t for _, t in flatten(self.model.detect(image), "kp"))


class _FrameGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, cache_spec: Any, kp_spec: Any, num_cache: int):
        super().__init__()
        self.model, self.cache_spec, self.kp_spec, self.num_cache = model, cache_spec, kp_spec, num_cache

    def forward(self, *tensors: Tensor) -> Tensor:
        cache = unflatten(self.cache_spec, iter(tensors[:self.num_cache]))
        kp = unflatten(self.kp_spec, iter(tensors[self.num_cache:]))
        return self.model.animate(cache, kp)["prediction"]


def _symbolic_inverse(g, a):
    return g.op("com.microsoft::Inverse", a).setType(a.type())


def _symbolic_solve(g, a, b, left=None):
    from torch.onnx import symbolic_helper

    if left is not None and not symbolic_helper._maybe_get_const(left, "b"):
        raise ExportError("torch.linalg.solve(..., left=False) has no ONNX form here")
    inverse = g.op("com.microsoft::Inverse", a).setType(a.type())
    x = g.op("MatMul", inverse, b)
    # one step of iterative refinement, x += A^-1 (b - A x): brings the float32 explicit inverse's solution to
    # LU-solve accuracy (TPSMM's system: 9e-7 -> the float32 rounding of torch.linalg.solve itself)
    return g.op("Add", x, g.op("MatMul", inverse, g.op("Sub", b, g.op("MatMul", a, x))))


#: torch's ScalarType codes of the floating dtypes (c10/core/ScalarType.h)
_SCALAR_TYPES = {5: torch.float16, 6: torch.float32, 7: torch.float64, 15: torch.bfloat16}


def _symbolic_linspace(g, start, end, steps, dtype, *args):
    from torch.onnx import symbolic_helper

    first, last = (symbolic_helper._maybe_get_const(v, "f") for v in (start, end))
    count, code = symbolic_helper._maybe_get_const(steps, "i"), symbolic_helper._maybe_get_const(dtype, "i")
    if not all(isinstance(v, (int, float)) for v in (first, last, count)):
        raise ExportError("torch.linspace with values known only at run time has no ONNX form here")
    kind = torch.get_default_dtype() if code is None else _SCALAR_TYPES.get(code)
    if kind is None:
        raise ExportError(f"torch.linspace of scalar type {code} has no ONNX form here (floating point only)")
    return g.op("Constant", value_t=torch.linspace(float(first), float(last), int(count), dtype=kind))


def _exporter(*names: str) -> tuple:
    """torch's TorchScript-exporter modules by name (``symbolic_helper``, ``_type_utils``, ``symbolic_opsetN``):
    under ``torch.onnx._internal.torchscript_exporter`` since torch 2.9, under ``torch.onnx`` before."""
    import importlib

    try:
        return tuple(importlib.import_module(f"torch.onnx._internal.torchscript_exporter.{n}") for n in names)
    except ImportError:  # torch < 2.9
        return tuple(importlib.import_module(f"torch.onnx.{n}") for n in names)


def _torch_rule(opset: str, op: str):
    """torch's own ONNX rule ``op`` of the module ``opset`` (its arguments already parsed)."""
    rule = getattr(_exporter(opset)[0], op)
    return getattr(rule, "__wrapped__", rule)


def _symbolic_sdpa(g, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
    """A boolean (keep) mask as torch's rule writes it would check every attention probability for NaN (the
    softmax of a query row that sees no key) and zero it: two passes over the ``(B, H, M, N)`` probabilities.
    Written here as an additive 0 / -inf mask at the mask's own broadcast shape, and the rows that see no key zeroed
    on the ``(B, H, M, D)`` output instead: torch's numbers (0 for such rows), for a fraction of the work."""
    _type_utils, symbolic_helper = _exporter("_type_utils", "symbolic_helper")
    JitScalarType = _type_utils.JitScalarType  # noqa: N806 - torch's class
    rule = _torch_rule("symbolic_opset14", "scaled_dot_product_attention")
    if (symbolic_helper._is_none(attn_mask) or is_causal
            or JitScalarType.from_value(attn_mask, JitScalarType.UNDEFINED) != JitScalarType.BOOL):
        return rule(g, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    zero = g.op("Constant", value_t=torch.tensor([0.0]))
    additive = g.op("Where", attn_mask, zero, g.op("Constant", value_t=torch.tensor([-float("inf")])))
    out = rule(g, query, key, value, additive, dropout_p, False, scale, enable_gqa)
    seen = g.op("ReduceMax", g.op("Cast", attn_mask, to_i=JitScalarType.FLOAT.onnx_type()), axes_i=[-1],
                keepdims_i=1)
    return g.op("Where", g.op("Equal", seen, zero), zero, out)


def _symbolic_grid_sampler(g, feature, grid, mode, padding, align_corners):
    """``grid_sample(align_corners=True)`` as onnxruntime's ``GridSample`` with ``align_corners=0`` on the grid scaled
    by ``((W - 1) / W, (H - 1) / H)``: the same pixel coordinates (``(x + 1) (W - 1) / 2`` either way), so the same
    taps and weights up to float rounding.  onnxruntime 1.32's kernel runs ``align_corners=0`` 5-7x faster here
    (benchmarks/README.md).  Bilinear or nearest with zeros or border padding (where the two conventions sample alike);
    any other case, or a feature whose size the trace does not know, keeps torch's rule."""
    _type_utils, symbolic_helper = _exporter("_type_utils", "symbolic_helper")
    rule = _torch_rule("symbolic_opset16", "grid_sampler")
    sizes = symbolic_helper._get_tensor_sizes(feature) or []
    dtype = _type_utils.JitScalarType.from_value(grid, _type_utils.JitScalarType.UNDEFINED)
    if (not align_corners or mode not in (0, 1) or padding not in (0, 1) or len(sizes) != 4
            or not all(isinstance(v, int) and v > 0 for v in sizes[2:]) or dtype != _type_utils.JitScalarType.FLOAT):
        return rule(g, feature, grid, mode, padding, align_corners)
    h, w = sizes[2:]
    scale = g.op("Constant", value_t=torch.tensor([(w - 1) / w, (h - 1) / h], dtype=torch.float32))
    return rule(g, feature, g.op("Mul", grid, scale), mode, padding, False)


def _parsed(fn, *signature: str):
    """``fn`` behind torch's argument parsing (``symbolic_helper.parse_args``: ``v`` a value, ``i`` an int, ``f`` a
    float, ``b`` a bool), as torch registers its own rules."""
    from torch.onnx import symbolic_helper

    return symbolic_helper.parse_args(*signature)(fn)


#: the rewrites an export knows (``onnx_graphs(..., rewrites=...)``): ``upsample``, nearest-x2 upsampling + 3x3
#: convolution computed at the low resolution (:func:`thkit.layers.upsample.fold_upsample`); ``masked_attention``,
#: boolean-masked attention without a NaN check over every probability (:func:`_symbolic_sdpa`); ``window``, window
#: (un)embeddings as convolutions, whose transposes onnxruntime runs faster than those of the partitioned windows
#: (:func:`thkit.layers.window.conv_windows`); ``winograd``, 3x3 convolutions with 512 channels or more in and out by
#: Winograd F(2x2, 3x3) (:func:`thkit.layers.winograd.winograd_convs`); ``grid_sample``, ``align_corners=True``
#: sampling as onnxruntime's faster ``align_corners=0`` kernel on a rescaled grid (:func:`_symbolic_grid_sampler`)
REWRITES = ("upsample", "masked_attention", "window", "winograd", "grid_sample")
#: the rewrites an export applies by default: all but ``winograd``, which measured 0.95-1.07x on TPSMM's frame here
#: by run (benchmarks/README.md), so is an opt-in
DEFAULT_REWRITES = ("upsample", "masked_attention", "window", "grid_sample")


@contextlib.contextmanager
def _export_symbolics(masked_attention: bool = True, grid_sample: bool = True):
    """While exporting: ``aten::linalg_inv`` and ``aten::linalg_solve`` as onnxruntime's ``com.microsoft::Inverse``
    (standard ONNX has no matrix inverse), and ``aten::linspace`` of constant ends as the constant torch computes,
    in the asked dtype (the built-in symbolic makes float64 values, which onnxruntime then refuses to mix with
    float32 ones, e.g. in SMAC's ``linspace_grid``); with ``masked_attention``, boolean-masked
    ``scaled_dot_product_attention`` as :func:`_symbolic_sdpa`; with ``grid_sample``,
    ``grid_sample(align_corners=True)`` as :func:`_symbolic_grid_sampler`."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    ops = {"aten::linalg_inv": _symbolic_inverse, "aten::linalg_solve": _symbolic_solve,
           "aten::linspace": _symbolic_linspace}
    if masked_attention:
        ops["aten::scaled_dot_product_attention"] = _parsed(_symbolic_sdpa, "v", "v", "v", "v", "f", "b", "v", "b")
    if grid_sample:
        ops["aten::grid_sampler"] = _parsed(_symbolic_grid_sampler, "v", "v", "i", "i", "b")
    for name, fn in ops.items():
        register_custom_op_symbolic(name, fn, OPSET)
    try:
        yield
    finally:
        for name in ops:
            unregister_custom_op_symbolic(name, OPSET)


def _export(module: torch.nn.Module, args: tuple[Tensor, ...], inputs: list[str], outputs: list[str],
            what: str) -> bytes:
    buf = io.BytesIO()
    module.eval()  # export restores the wrapper's mode afterwards: an eval wrapper keeps the model in eval mode
    try:
        # autograd off, as at inference: the layers' exact inference shortcuts (thkit.layers.blocks.shortcut) apply
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values fixed at export
            torch.onnx.export(module, args, buf, input_names=inputs, output_names=outputs, opset_version=OPSET,
                              dynamo=False, do_constant_folding=True)
    except torch.onnx.errors.OnnxExporterError as e:  # an operator without an ONNX form, most often
        raise ExportError(f"the {what} graph does not export to ONNX opset {OPSET}: "
                          f"{str(e).splitlines()[0]}") from e
    return buf.getvalue()


def _check_rewrites(rewrites: Sequence[str]) -> list[str]:
    """``rewrites`` in :data:`REWRITES` order, or an :class:`ExportError` naming an unknown one."""
    rewrites = [rewrites] if isinstance(rewrites, str) else list(rewrites)
    unknown = sorted(set(rewrites) - set(REWRITES))
    if unknown:
        raise ExportError(f"unknown export rewrite {', '.join(map(repr, unknown))}; known: {', '.join(REWRITES)}")
    return [r for r in REWRITES if r in rewrites]


def onnx_graphs(model: torch.nn.Module, image_size: int | None = None,
                rewrites: Sequence[str] = DEFAULT_REWRITES) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The three graphs of ``model`` (serialised ONNX models) and their description (input and output names,
    the cache's structure, image size, value range).  ``image_size``: default ``model.meta['image_size']``.

    ``rewrites`` (of :data:`REWRITES`, default :data:`DEFAULT_REWRITES`; the same values up to float rounding):
    ``upsample`` exports a copy of the model with every nearest-x2-upsampling + 3x3 convolution computed at the low
    resolution (:func:`thkit.layers.upsample.fold_upsample`: 2.25x fewer multiply-adds in those convolutions;
    BatchNorms folded into their convolutions first, :func:`thkit.layers.blocks.fold_batchnorm`, as onnxruntime
    would have done; ``model`` itself is not changed); ``masked_attention`` writes boolean-masked attention without
    a NaN check over every probability (:func:`_symbolic_sdpa`); ``window`` exports window (un)embeddings as
    convolutions (:func:`thkit.layers.window.conv_windows`); ``winograd`` computes the 3x3 convolutions with 512
    channels or more by Winograd F(2x2, 3x3) (:func:`thkit.layers.winograd.winograd_convs`); ``grid_sample`` writes
    ``grid_sample(align_corners=True)`` as onnxruntime's faster ``align_corners=0`` kernel on a rescaled grid
    (:func:`_symbolic_grid_sampler`)."""
    meta = dict(getattr(model, "meta", {}) or {})
    size = int(image_size or meta.get("image_size") or 0)
    if size < 8:
        raise ExportError("the export needs the model's image size: pass image_size= (or use a model from "
                          "thkit.create_model)")
    if not all(hasattr(model, name) for name in ("encode_source", "detect", "animate")):
        raise ExportError(f"{type(model).__name__} has no encode_source / detect / animate: only a streaming "
                          "model (TalkingHeadModel) exports")
    param = next(model.parameters(), None)
    if param is not None and param.device.type != "cpu":
        raise ExportError("export a model on the CPU (model.cpu())")
    rewrites = _check_rewrites(rewrites)
    original, was_training = model, model.training
    model.eval()
    try:
        if {"upsample", "window", "winograd"} & set(rewrites):
            import copy

            from thkit.layers.blocks import fold_batchnorm
            from thkit.layers.upsample import fold_upsample
            from thkit.layers.window import conv_windows
            from thkit.layers.winograd import winograd_convs

            rewritten, changed = copy.deepcopy(model), 0
            # BatchNorm first: onnxruntime fuses a BatchNorm into the convolution right before it, which a folded
            # block's interleaving (or a Winograd convolution's output transform) would hide from it
            fold_batchnorm(rewritten)
            if "upsample" in rewrites:
                changed += fold_upsample(rewritten)
            if "window" in rewrites:
                changed += conv_windows(rewritten)
            if "winograd" in rewrites:  # last: the upsampling blocks' convolutions are folded by then
                changed += winograd_convs(rewritten)
            if changed:
                model = rewritten
        lo, hi = (float(v) for v in getattr(model, "input_range", (0.0, 1.0)))
        g = torch.Generator().manual_seed(0)
        channels = int(meta.get("channels", 3))
        source = lo + (hi - lo) * torch.rand(1, channels, size, size, generator=g)
        driving = lo + (hi - lo) * torch.rand(1, channels, size, size, generator=g)
        with torch.no_grad():
            cache = model.encode_source(source)
            kp = model.detect(driving)
        cache_named, kp_named = flatten(cache, "cache"), flatten(kp, "kp")
        cache_names, kp_names = [n for n, _ in cache_named], [n for n, _ in kp_named]
        with _export_symbolics("masked_attention" in rewrites, "grid_sample" in rewrites):
            graphs = {
                "source": _export(_SourceGraph(model), (source,), ["source"], cache_names, "source"),
                "keypoints": _export(_KeypointGraph(model), (driving,), ["image"], kp_names, "keypoints"),
                "frame": _export(_FrameGraph(model, structure(cache), structure(kp), len(cache_names)),
                                 tuple(t for _, t in cache_named + kp_named), cache_names + kp_names,
                                 ["prediction"], "frame"),
            }
    finally:
        original.train(was_training)
    spec = {"format": FORMAT, "opset": OPSET, "image_size": size, "channels": channels, "input_range": [lo, hi],
            "cache": structure(cache), "cache_names": cache_names, "keypoints": structure(kp),
            "keypoint_names": kp_names, "graphs": {k: f"{k}.onnx" for k in GRAPHS}, "rewrites": rewrites,
            "recipe_meta": {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))}}
    return graphs, spec


def export_onnx(model: torch.nn.Module, out: str | os.PathLike, image_size: int | None = None,
                rewrites: Sequence[str] = DEFAULT_REWRITES) -> dict[str, Path]:
    """Write ``model``'s graphs (``source.onnx``, ``keypoints.onnx``, ``frame.onnx``) and their description
    (``onnx.json``) into the folder ``out``, each file atomically.  Returns ``{name: path}``."""
    graphs, spec = onnx_graphs(model, image_size, rewrites)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; the export is a folder of graphs")
    paths = {}
    for name, data in graphs.items():
        paths[name] = atomic_write(out / spec["graphs"][name], lambda f, d=data: f.write(d))
    paths["spec"] = atomic_write(out / SPEC_FILE, lambda f: f.write(json.dumps(spec, indent=1)), mode="w")
    return paths


# --------------------------------------------------------------------------------------------------------
# the export cache: an export made once per weights, recipe, size and thkit, reused by later runs
# --------------------------------------------------------------------------------------------------------
def cache_dir() -> Path | None:
    """Where :func:`cached_export` keeps exports: ``$THKIT_ONNX_CACHE``, else ``$XDG_CACHE_HOME/thkit/onnx``, else
    ``~/.cache/thkit/onnx``; ``None`` when ``$THKIT_ONNX_CACHE`` is ``off`` (``0``, ``no``, ``false``, empty)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "no", "false") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "thkit" / "onnx"


def _source_digest() -> str:
    """A digest of thkit's own source files (what the graphs are traced from), so that a changed checkout of the
    same version does not reuse graphs traced from the old code."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def export_key(model: torch.nn.Module, image_size: int | None = None,
               rewrites: Sequence[str] = DEFAULT_REWRITES) -> str:
    """The cache key of ``model``'s export: a sha256 of every parameter and buffer (names, dtypes, shapes, bytes),
    the recipe's ``model`` section and the module structure, the image size, the rewrites, and thkit (version and
    source), torch and the export format.  Any changed weight gives another key."""
    import thkit

    meta = dict(getattr(model, "meta", {}) or {})
    recipe = getattr(model, "recipe", None)
    section = recipe.get("model") if hasattr(recipe, "get") else None
    h = hashlib.sha256()
    header = {"format": FORMAT, "opset": OPSET, "thkit": thkit.__version__, "source": _source_digest(),
              "torch": torch.__version__, "size": int(image_size or meta.get("image_size") or 0),
              "rewrites": _check_rewrites(rewrites),
              "input_range": [float(v) for v in getattr(model, "input_range", (0.0, 1.0))],
              "recipe": section, "modules": repr(model)}
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:32]


def cached_export(model: torch.nn.Module, image_size: int | None = None, rewrites: Sequence[str] = DEFAULT_REWRITES,
                  folder: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The folder of ``model``'s export in the cache (``folder``, default :func:`cache_dir`), and whether it was
    there already.  A missing export is written into a temporary folder beside it and renamed into place (a crash
    or a concurrent run never leaves a half-written export under the key; of two concurrent runs, the first
    rename wins)."""
    root = Path(folder) if folder is not None else cache_dir()
    if root is None:
        raise ExportError(f"the ONNX export cache is off (${CACHE_ENV}={os.environ.get(CACHE_ENV)!r})")
    target = root / export_key(model, image_size, rewrites)
    if (target / SPEC_FILE).is_file():
        return target, True
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    except OSError as e:
        raise ExportError(f"cannot write the ONNX export cache {root}: {e.strerror or e} (set ${CACHE_ENV} to "
                          "another folder, or to off)") from e
    publish_entry(tmp, target, lambda: export_onnx(model, tmp, image_size, rewrites))
    return target, False


def publish_entry(tmp: Path, target: Path, write) -> None:
    """Call ``write()`` (which fills the fresh folder ``tmp``), then rename ``tmp`` to the cache entry ``target``.
    A non-empty folder is never replaced: of two concurrent runs the first rename wins, and an entry without its
    spec (damaged) is replaced; ``tmp`` is removed whatever happens."""
    try:
        write()
        try:
            os.rename(tmp, target)
        except OSError:  # another run's entry, or a damaged one
            if not (target / SPEC_FILE).is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------
# running the graphs
# --------------------------------------------------------------------------------------------------------
def session_options(threads: int | None = None, options: Mapping[str, Any] | None = None):
    """onnxruntime's ``SessionOptions`` of :class:`OnnxModel`: ``threads`` intra-op threads (default torch's),
    one inter-op thread, warnings off, every graph optimisation (``ORT_ENABLE_ALL``: constant folding, operator
    fusions, the NCHWc layout of the convolutions).  ``options``: more settings, each a ``SessionOptions``
    attribute (``enable_cpu_mem_arena=False``; an enum by name, ``graph_optimization_level='ORT_ENABLE_BASIC'``) or a
    session config entry (``'session.set_denormal_as_zero': '1'``)."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in (options or {}).items():
        if "." in key:
            opts.add_session_config_entry(key, str(value))
            continue
        if not hasattr(opts, key):
            raise ExportError(f"unknown onnxruntime session option {key!r}: expected a SessionOptions attribute "
                              "or a config entry such as 'session.set_denormal_as_zero'")
        kind = type(getattr(opts, key))
        if isinstance(value, str) and kind is not str:  # an enum by its name; a text setting is set as given
            if not hasattr(kind, value):
                raise ExportError(f"onnxruntime session option {key}={value!r} is not one of "
                                  f"{', '.join(n for n in dir(kind) if n.isupper())}")
            value = getattr(kind, value)
        setattr(opts, key, value)
    return opts


class OnnxModel:
    """The graphs of :func:`onnx_graphs` run by onnxruntime on the CPU, with the streaming model's calls
    (``encode_source``, ``detect``, ``animate``; torch tensors in and out), so that
    :class:`~thkit.inference.stream.StreamingAnimator` drives it like the torch model.  A batch of driving
    frames is run one frame at a time (the graphs have batch 1).

    Build it from a model (:meth:`from_model`: exported in memory) or from a folder written by
    :func:`export_onnx` (:meth:`load`).  ``nnpack=True``: the per-frame graphs' wide 3x3 convolutions run by NNPACK's
    Winograd in torch between onnxruntime segments (:class:`thkit.nnpack.NnpackSession`; SMAC at 256 px 1.16-1.2x,
    each convolution about 1e-5 of its magnitude from the direct one).
    """

    def __init__(self, graphs: Mapping[str, bytes | str], spec: Mapping[str, Any], threads: int | None = None,
                 options: Mapping[str, Any] | None = None, nnpack: bool = False):
        ort = require_onnxruntime()
        if spec.get("format") != FORMAT:
            raise ExportError(f"not a thkit ONNX export (format {spec.get('format')!r}, expected {FORMAT!r})")
        opts = session_options(threads, options)
        self.spec = dict(spec)
        self.sessions = {}
        #: whether the per-frame graphs' wide 3x3 convolutions run by NNPACK's Winograd (:mod:`thkit.nnpack`)
        self.nnpack = bool(nnpack)
        if self.nnpack:
            from thkit.nnpack import SEGMENT_OPTIONS, NnpackSession

            segment_opts = session_options(threads, {**SEGMENT_OPTIONS, **dict(options or {})})
        for name in GRAPHS:
            if self.nnpack and name in NNPACK_GRAPHS:
                self.sessions[name] = NnpackSession(graphs[name], segment_opts)
                continue
            try:
                self.sessions[name] = ort.InferenceSession(graphs[name], sess_options=opts,
                                                           providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes
                raise ExportError(f"onnxruntime cannot load the {name} graph: {str(e).splitlines()[0]}") from e
        self.inputs = {name: [i.name for i in s.get_inputs()] for name, s in self.sessions.items()}
        self.input_range = tuple(spec["input_range"])
        self.meta = {"image_size": int(spec["image_size"]), "input_range": self.input_range, "backend": "onnxruntime"}
        self.training = False
        #: what loading cost (:meth:`from_model`, :meth:`cached`): ``cache``, ``export_s``, ``sessions_s``, ``folder``
        self.startup: dict[str, Any] = {}

    @classmethod
    def from_model(cls, model: torch.nn.Module, image_size: int | None = None, threads: int | None = None,
                   options: Mapping[str, Any] | None = None, nnpack: bool = False):
        """Export ``model`` in memory (:func:`onnx_graphs`) and load the graphs."""
        t0 = time.perf_counter()
        graphs, spec = onnx_graphs(model, image_size)
        export_s = time.perf_counter() - t0
        out = cls(graphs, spec, threads, options, nnpack)
        out.startup = {"cache": None, "export_s": export_s, "sessions_s": time.perf_counter() - t0 - export_s,
                       "folder": None}
        return out

    @classmethod
    def cached(cls, model: torch.nn.Module, image_size: int | None = None, threads: int | None = None,
               options: Mapping[str, Any] | None = None, folder: str | os.PathLike | None = None,
               nnpack: bool = False):
        """Load ``model``'s export from the cache (:func:`cached_export`), exporting it there first if it is not
        yet: the export's cost is paid once per weights, recipe, size and thkit.  ``startup`` says what it cost
        (``cache``: ``'hit'`` or ``'miss'``, ``export_s``, ``sessions_s``, ``folder``)."""
        t0 = time.perf_counter()
        path, hit = cached_export(model, image_size, folder=folder)
        export_s = time.perf_counter() - t0
        try:
            out = cls.load(path, threads, options, nnpack)
        except ExportError:
            if not hit:
                raise
            shutil.rmtree(path, ignore_errors=True)  # a damaged entry: export again
            return cls.cached(model, image_size, threads, options, folder, nnpack)
        out.startup = {"cache": "hit" if hit else "miss", "export_s": export_s,
                       "sessions_s": time.perf_counter() - t0 - export_s, "folder": str(path)}
        logging.getLogger("thkit.export").info(
            "ONNX export %s %s (%.1f s), onnxruntime sessions %.1f s", "found in" if hit else "written to", path,
            export_s, out.startup["sessions_s"])
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike, threads: int | None = None, options: Mapping[str, Any] | None = None,
             nnpack: bool = False):
        """Load a folder written by :func:`export_onnx`."""
        folder = Path(folder)
        spec_path = folder / SPEC_FILE
        if not spec_path.is_file():
            raise ExportError(f"{folder} is not an ONNX export: it has no {SPEC_FILE}")
        try:
            spec = json.loads(spec_path.read_text())
        except ValueError as e:
            raise ExportError(f"{spec_path} is not valid JSON: {e}") from e
        graphs = {}
        for name in GRAPHS:
            path = folder / spec.get("graphs", {}).get(name, f"{name}.onnx")
            if not path.is_file():
                raise ExportError(f"ONNX export {folder} lacks its {name} graph {path.name}")
            graphs[name] = str(path)
        return cls(graphs, spec, threads, options, nnpack)

    # the model's calls ----------------------------------------------------------------------------------
    def parameters(self) -> Iterator[Tensor]:
        """None: the weights live in the graphs (the device is the CPU)."""
        return iter(())

    def eval(self) -> OnnxModel:
        return self

    def _run(self, name: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[name].run(None, {k: feeds[k] for k in self.inputs[name]})

    @staticmethod
    def _numpy(t: Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).contiguous().numpy()

    def encode_source(self, source: Tensor) -> dict[str, Any]:
        """The cache: ``kp_source`` (torch, for motion transfer) and every cache tensor (numpy, for the frame
        graph)."""
        if source.shape[0] != 1:
            raise ExportError(f"the source graph takes one image, got a batch of {source.shape[0]}")
        outs = self._run("source", {"source": self._numpy(source)})
        names = self.spec["cache_names"]
        cache = unflatten(self.spec["cache"], iter(torch.from_numpy(o) for o in outs))
        return {"kp_source": cache["kp_source"], "arrays": dict(zip(names, outs))}

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """Keypoints of a batch of frames (one graph call per frame)."""
        rows = [self._run("keypoints", {"image": self._numpy(image[i:i + 1])}) for i in range(image.shape[0])]
        tensors = (torch.from_numpy(np.concatenate(parts)) for parts in zip(*rows))
        return unflatten(self.spec["keypoints"], tensors)

    def animate(self, cache: Mapping[str, Any], kp_driving: Mapping[str, Tensor],
                driving: Tensor | None = None) -> dict[str, Tensor]:
        """``{'prediction': (B, C, H, W)}`` for a batch of (transferred) keypoints.  The frame graph animates; it
        takes no driving image (reconstruction with a driving-image input, e.g. TPSMM's background motion, is
        torch's)."""
        if driving is not None:
            raise ExportError("the ONNX frame graph takes no driving image: reconstruction that passes the driving "
                              "frames to the model runs with --backend torch")
        if any(k in kp_driving for k in EDIT_KEYS):
            raise ExportError(WARP_EDIT_REFUSED)
        named = flatten(kp_driving, "kp")
        preds = []
        for i in range(named[0][1].shape[0]):
            feeds = dict(cache["arrays"])
            feeds.update({n: self._numpy(t[i:i + 1]) for n, t in named})
            preds.append(self._run("frame", feeds)[0])
        return {"prediction": torch.from_numpy(np.concatenate(preds))}


def compare_with_torch(model: torch.nn.Module, onnx_model: OnnxModel, frames: int = 2, seed: int = 0) -> float:
    """Max |difference| between the predictions of ``model`` and of its export ``onnx_model`` on random source and
    driving images (relative motion with adapt-scale, the streaming path of both)."""
    from thkit.inference.stream import StreamingAnimator

    size, channels = int(onnx_model.spec["image_size"]), int(onnx_model.spec["channels"])
    lo, hi = onnx_model.input_range
    g = torch.Generator().manual_seed(seed)
    source = lo + (hi - lo) * torch.rand(1, channels, size, size, generator=g)
    driving = [lo + (hi - lo) * torch.rand(channels, size, size, generator=g) for _ in range(frames)]
    outs = []
    for m in (model, onnx_model):
        anim = StreamingAnimator(m, batch_size=1, relative=True, adapt_movement_scale=True)
        anim.set_source(source)
        outs.append(torch.stack(list(anim.run(driving))))
    return float((outs[0].float() - outs[1]).abs().max())


def check_backend(backend: str = "torch", precision: str | None = None, device: torch.device | str = "cpu",
                  nnpack: bool = False) -> None:
    """An :class:`ExportError` / :class:`~thkit.inference.errors.InferenceError` (one line) for a ``--backend``,
    ``--precision``, ``--device``, ``--nnpack`` combination that cannot run (checked before any work)."""
    from thkit.inference.stream import resolve_precision

    if backend not in BACKENDS:
        raise ExportError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if nnpack:
        from thkit.nnpack import nnpack_available

        if backend != "onnxruntime" or precision not in (None, "fp32"):
            raise ExportError("--nnpack computes the float32 ONNX graphs' wide 3x3 convolutions by NNPACK: it needs "
                              f"--backend onnxruntime at fp32 (got --backend {backend}, --precision {precision})")
        if not nnpack_available():
            raise ExportError("--nnpack needs a torch built with NNPACK (torch.backends.nnpack.is_available() is "
                              "False here): leave out --nnpack")
    if backend == "torch":
        if precision is not None and str(precision).strip().lower() == "int8":
            raise ExportError("--precision int8 runs on --backend onnxruntime (the export with its convolutions "
                              "quantized, thkit/quantize.py); --backend torch takes fp32, bf16 or fp16")
        resolve_precision(precision, device)
        return
    if precision not in (None, "fp32", "int8"):
        raise ExportError(f"--backend onnxruntime runs the float32 or the int8 graphs: --precision {precision} is "
                          "for --backend torch")
    if torch.device(device).type != "cpu":
        raise ExportError(f"--backend onnxruntime runs on the CPU: use --device cpu (not {device})")
    require_onnxruntime()

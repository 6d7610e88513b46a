"""Run an ONNX graph with its wide 3x3 convolutions computed by NNPACK's Winograd convolution and everything else
by onnxruntime.

onnxruntime computes a convolution directly (its NCHWc kernels run at this CPU's fp32 convolution ceiling), so a
frame graph whose time is mostly 3x3 convolutions cannot get much faster there.  NNPACK (built into torch's CPU
wheels, :func:`torch._nnpack_spatial_convolution`) computes a 3x3 convolution by Winograd F(6x6, 3x3): 8x8 input
tiles, 64 multiplies per 6x6 output tile and channel pair against the direct convolution's 324, which pays
where the channels are wide enough for the transforms to amortise.  :class:`NnpackSession` cuts a graph at each
chosen ``Conv`` node (:func:`select_convs`), runs the pieces between them as onnxruntime sessions (each optimised as
usual) and the cut convolutions by NNPACK in torch, passing arrays without copies.

Winograd's transforms round differently from a direct convolution: NNPACK's output is about 1e-5 of the
output's magnitude from the exact result, against a few 1e-7 for onnxruntime's or oneDNN's direct kernels
(``tests/test_nnpack.py`` measures both against float64).  Through a whole SMAC frame at 256 px that is a max
|diff| of 4.8-5.3e-5 from the reference path with random weights (plain onnxruntime 2.9e-5), inside the 1e-4 of an
exact path but not bit-comparable: ``benchmarks/speed.py`` reports it beside the speed.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thkit.errors import ExportError

__all__ = ["MIN_CHANNELS", "MIN_SIZE", "SEGMENT_OPTIONS", "ConvChoice", "NnpackSession", "nnpack_available",
           "select_convs", "shared_arena"]

#: the segments' session settings (:class:`thkit.export.OnnxModel` adds them to its own): no onnxruntime thread
#: spinning between runs (it takes the cores NNPACK needs next: SMAC's frame 0.6x with spinning, 1.2x without), and
#: one arena for every segment (:func:`shared_arena`; an arena per segment, with every array kept to the end of
#: the frame, held 2.6 GB more for SMAC at 256 px)
SEGMENT_OPTIONS = {"session.intra_op.allow_spinning": "0", "session.use_env_allocators": "1"}
_ARENA: list[bool] = []

#: the smallest input (in channels, in pixels per side) a 3x3 convolution needs to go to NNPACK by default
#: (``benchmarks/README.md``, 13th session): cutting SMAC's 32-px convolutions too gained 3 % more and took its
#: max |diff| to 7.4-8.2e-5, too close to 1e-4; only >= 128 channels gave 1.10x instead of 1.19x
MIN_CHANNELS = 64
MIN_SIZE = 64


def shared_arena() -> None:
    """Register onnxruntime's process-wide CPU arena once, which sessions with ``session.use_env_allocators = 1``
    share instead of growing one arena each."""
    if _ARENA:
        return
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
    _ARENA.append(True)


def nnpack_available() -> bool:
    """Whether this torch has NNPACK (torch's x86-64 and arm64 CPU wheels do)."""
    return bool(getattr(torch.backends, "nnpack", None) and torch.backends.nnpack.is_available())


@dataclass(frozen=True)
class ConvChoice:
    """A ``Conv`` node NNPACK can compute: its name, input, output, weight and bias initializers, input shape."""

    node: str
    input: str
    output: str
    weight: str
    bias: str | None
    shape: tuple[int, ...]


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _infer(model) -> tuple[dict[str, int], dict[str, tuple[int | None, ...] | None]]:
    """Every tensor's element type and shape (``None`` where unknown, per dimension or whole) by ONNX shape
    inference with data propagation."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model, data_prop=True)
    types, shapes = {}, {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = v.type.tensor_type
        types[v.name] = t.elem_type
        shapes[v.name] = (tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
                          if t.HasField("shape") else None)
    return types, shapes


def select_convs(model, min_channels: int = MIN_CHANNELS, min_size: int = MIN_SIZE,
                 shapes: Mapping[str, Any] | None = None) -> list[ConvChoice]:
    """The ``Conv`` nodes of ``model`` (an ``onnx.ModelProto``) that NNPACK computes: 3x3 kernels with stride 1,
    dilation 1, padding 1 on every side, one group, float32 weights (and bias) stored as initializers, and an input
    of known shape (batch, >= ``min_channels``, >= ``min_size``, >= ``min_size``)."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    shapes = _infer(model)[1] if shapes is None else shapes
    chosen = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        a = _attrs(node)
        weight = inits.get(node.input[1])
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if weight is None or weight.data_type != TensorProto.FLOAT or list(weight.dims[2:]) != [3, 3]:
            continue
        if bias is not None and (bias not in inits or inits[bias].data_type != TensorProto.FLOAT):
            continue
        if (a.get("group", 1) != 1 or list(a.get("strides", [1, 1])) != [1, 1]
                or list(a.get("dilations", [1, 1])) != [1, 1] or list(a.get("pads", [0] * 4)) != [1] * 4
                or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            continue
        shape = shapes.get(node.input[0])
        if (not shape or len(shape) != 4 or any(d is None for d in shape) or shape[1] < min_channels
                or min(shape[2:]) < min_size):
            continue
        chosen.append(ConvChoice(node.name, node.input[0], node.output[0], node.input[1], bias, tuple(shape)))
    return chosen


class NnpackSession:
    """An ONNX graph run as onnxruntime segments with the convolutions of :func:`select_convs` between them computed
    by NNPACK (torch's threads).  ``run`` / ``get_inputs`` / ``get_outputs`` as an ``onnxruntime.InferenceSession``.

    ``graph``: a serialised model or a path; ``options``: the segments' ``onnxruntime.SessionOptions`` (default:
    torch's threads and :data:`SEGMENT_OPTIONS`, which options of one's own should carry too).  ``select``: which
    convolutions (default :func:`select_convs` with its defaults).  ``num_cut``: how many were chosen;
    ``num_sessions``: the onnxruntime segments.  A run frees each intermediate array after its last reader.
    """

    def __init__(self, graph: bytes | str | os.PathLike, options: Any = None,
                 select: Callable[[Any], Sequence[ConvChoice]] | None = None):
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        if not nnpack_available():
            raise ExportError("NNPACK convolutions need a torch built with NNPACK (torch.backends.nnpack.is_available()"
                              " is False here): run onnxruntime without nnpack")
        model = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(os.fspath(graph))
        g = model.graph
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
            raise ExportError("NNPACK convolutions cannot cut a graph with control flow (If / Loop / Scan nodes)")
        types, shapes = _infer(model)
        chosen = list(select(model) if select is not None else select_convs(model, shapes=shapes))
        by_output = {c.output: c for c in chosen}  # an output name is unique; a node name may be empty
        inits = {i.name: i for i in g.initializer}
        shared_arena()
        if options is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            for key, value in SEGMENT_OPTIONS.items():
                options.add_session_config_entry(key, value)

        # the graph in order, cut at each chosen convolution
        pieces: list[tuple[str, Any]] = []
        current: list[Any] = []
        for node in g.node:
            if node.op_type == "Conv" and node.output and node.output[0] in by_output:
                pieces.append(("ort", current))
                pieces.append(("conv", by_output[node.output[0]]))
                current = []
            else:
                current.append(node)
        pieces.append(("ort", current))

        # what every piece must hand on: the tensors read after it (or the graph's outputs)
        needed_after: list[set[str]] = [set() for _ in pieces]
        needed = {o.name for o in g.output}
        for i in range(len(pieces) - 1, -1, -1):
            needed_after[i] = set(needed)
            kind, body = pieces[i]
            needed.update([body.input] if kind == "conv" else (x for n in body for x in n.input if x))

        def info(name: str):
            shape = shapes.get(name)
            return helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT),
                                                 list(shape) if shape and all(d is not None for d in shape) else None)

        self._steps: list[tuple] = []
        for i, (kind, body) in enumerate(pieces):
            if kind == "conv":
                w = torch.from_numpy(numpy_helper.to_array(inits[body.weight]).copy())
                b = (torch.from_numpy(numpy_helper.to_array(inits[body.bias]).copy()) if body.bias
                     else torch.zeros(w.shape[0]))
                self._steps.append(("conv", body.input, body.output, w, b))
                continue
            produced = {o for n in body for o in n.output}
            outputs = [o for n in body for o in n.output if o in needed_after[i]]
            if not outputs:
                continue
            inputs, used = [], {}
            for n in body:
                for x in n.input:
                    if not x or x in produced:
                        continue
                    if x in inits:
                        used.setdefault(x, inits[x])
                    elif x not in inputs:
                        inputs.append(x)
            piece = helper.make_graph(body, f"{g.name}_{i}", [info(x) for x in inputs], [info(x) for x in outputs],
                                      list(used.values()))
            sub = helper.make_model(piece, opset_imports=model.opset_import, ir_version=model.ir_version,
                                    functions=model.functions)
            try:
                session = ort.InferenceSession(sub.SerializeToString(), sess_options=options,
                                               providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes
                raise ExportError(f"onnxruntime cannot load segment {i} of the NNPACK split: "
                                  f"{str(e).splitlines()[0]}") from e
            self._steps.append(("ort", session, inputs, outputs))
        # after each step, drop the arrays no later step reads (the graph's outputs stay)
        last: dict[str, int] = {}
        for k, step in enumerate(self._steps):
            for name in ([step[1]] if step[0] == "conv" else step[2]):
                last[name] = k
        keep = {o.name for o in g.output}
        self._drop = [[n for n, k in last.items() if k == i and n not in keep] for i in range(len(self._steps))]
        self._inputs = list(g.input)
        self._outputs = list(g.output)
        self.num_cut = len(chosen)
        self.num_sessions = sum(1 for s in self._steps if s[0] == "ort")

    def get_inputs(self) -> list[Any]:
        return self._inputs

    def get_outputs(self) -> list[Any]:
        return self._outputs

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs (``output_names``, default all) for ``feeds``, as ``InferenceSession.run``."""
        env = dict(feeds)
        with torch.no_grad():
            for step, drop in zip(self._steps, self._drop):
                if step[0] == "conv":
                    _, x, y, w, b = step
                    env[y] = torch._nnpack_spatial_convolution(torch.from_numpy(np.ascontiguousarray(env[x])), w, b,
                                                               [1, 1]).numpy()
                else:
                    _, session, inputs, outputs = step
                    env.update(zip(outputs, session.run(outputs, {k: env[k] for k in inputs})))
                for name in drop:
                    del env[name]
        return [env[o] for o in (output_names or [o.name for o in self._outputs])]

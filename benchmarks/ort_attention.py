"""onnxruntime's fused ``com.microsoft.MultiHeadAttention`` against the attention the export writes (MatMul, Softmax,
MatMul), on the shapes of SMAC vox-256's retrieval attention, interleaved, in wall time per call.

Attention (QK^T, softmax, AV) is about 14 % of SMAC's onnxruntime frame (``onnx_levers.py``'s profile), so a faster
kernel there was the lever left for #17.2.  The shapes are those ``F.scaled_dot_product_attention`` receives in one
streaming frame of ``smac/vox256`` at 256 px (:func:`sdpa_shapes` hooks it; (heads, queries, keys, head dim), with
their call counts).  Both graphs take the same (1, H, S, D) tensors; the fused one adds the layout changes its
(1, S, H*D) inputs need.  Printed: median ms per call of each, their ratio, the frame's total for each shape, and the
max |diff| between the two.

    python benchmarks/ort_attention.py --threads 1 2
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np


def sdpa_shapes(recipe: str = "smac/vox256", size: int = 256) -> dict[tuple[int, int, int, int], int]:
    """(heads, queries, keys, head dim) -> calls of ``F.scaled_dot_product_attention`` in one streaming frame of
    ``recipe`` (random weights; the masked calls are counted with the others, as their cost is the same)."""
    import torch
    import torch.nn.functional as F

    import thkit

    model = thkit.create_model(recipe, size=size).eval()
    shapes: collections.Counter = collections.Counter()
    original = F.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        shapes[(int(q.shape[1]), int(q.shape[2]), int(k.shape[2]), int(q.shape[3]))] += 1
        return original(q, k, v, *args, **kwargs)

    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    F.scaled_dot_product_attention = counting
    try:
        with torch.no_grad():
            model.animate(model.encode_source(x), model.detect(x))
    finally:
        F.scaled_dot_product_attention = original
    return dict(shapes)


def _io(heads: int, queries: int, keys: int, dim: int):
    from onnx import TensorProto, helper

    shape = {"q": [1, heads, queries, dim], "k": [1, heads, keys, dim], "v": [1, heads, keys, dim]}
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shape.items()]
    return inputs, [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, heads, queries, dim])]


def decomposed_graph(heads: int, queries: int, keys: int, dim: int) -> bytes:
    """softmax(q k^T / sqrt(d)) v as torch's exporter writes scaled_dot_product_attention."""
    from onnx import TensorProto, helper

    inputs, outputs = _io(heads, queries, keys, dim)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / float(np.sqrt(dim))])
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "scale"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["o"])]
    graph = helper.make_graph(nodes, "decomposed", inputs, outputs, [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def fused_graph(heads: int, queries: int, keys: int, dim: int) -> bytes:
    """The same attention by onnxruntime's contrib ``MultiHeadAttention`` ((1, S, H*D) inputs, ``num_heads``)."""
    from onnx import TensorProto, helper

    inputs, outputs = _io(heads, queries, keys, dim)
    nodes = []
    for name, length in (("q", queries), ("k", keys), ("v", keys)):
        nodes += [helper.make_node("Transpose", [name], [f"{name}_t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"{name}_t", f"shape_{length}"], [f"{name}_3d"])]
    nodes += [helper.make_node("MultiHeadAttention", ["q_3d", "k_3d", "v_3d"], ["o_3d"], domain="com.microsoft",
                               num_heads=heads),
              helper.make_node("Reshape", ["o_3d", "shape_out"], ["o_4d"]),
              helper.make_node("Transpose", ["o_4d"], ["o"], perm=[0, 2, 1, 3])]
    inits = [helper.make_tensor(f"shape_{n}", TensorProto.INT64, [3], [1, n, heads * dim]) for n in {queries, keys}]
    inits.append(helper.make_tensor("shape_out", TensorProto.INT64, [4], [1, queries, heads, dim]))
    graph = helper.make_graph(nodes, "fused", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)]).SerializeToString()


def main(argv=None) -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=12, help="timed calls per graph and shape (after 2 untimed)")
    p.add_argument("--recipe", default="smac/vox256")
    args = p.parse_args(argv)
    shapes = sdpa_shapes(args.recipe)
    print(f"onnxruntime {ort.__version__}; {args.recipe} at 256 px: {sum(shapes.values())} attention calls per frame")
    print(f"{'threads':>7} {'heads,queries,keys,dim':>24} {'calls':>5} {'decomposed ms':>13} {'fused ms':>9} "
          f"{'ratio':>6} {'frame ms: decomposed':>20} {'fused':>7} {'max |diff|':>10}")
    for threads in args.threads:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        total = {"decomposed": 0.0, "fused": 0.0}
        for shape, calls in sorted(shapes.items()):
            heads, queries, keys, dim = shape
            rng = np.random.default_rng(0)
            feeds = {"q": rng.standard_normal((1, heads, queries, dim), dtype=np.float32),
                     "k": rng.standard_normal((1, heads, keys, dim), dtype=np.float32),
                     "v": rng.standard_normal((1, heads, keys, dim), dtype=np.float32)}
            sessions = {name: ort.InferenceSession(build(*shape), opts, providers=["CPUExecutionProvider"])
                        for name, build in (("decomposed", decomposed_graph), ("fused", fused_graph))}
            outs = {name: s.run(None, feeds)[0] for name, s in sessions.items()}
            times: dict[str, list[float]] = {name: [] for name in sessions}
            order = list(sessions)
            for r in range(args.repeats + 2):
                for name in order[r % 2:] + order[:r % 2]:  # alternate which graph runs first
                    t = time.perf_counter()
                    sessions[name].run(None, feeds)
                    if r >= 2:
                        times[name].append((time.perf_counter() - t) * 1e3)
            med = {name: statistics.median(v) for name, v in times.items()}
            for name in total:
                total[name] += med[name] * calls
            diff = float(np.abs(outs["decomposed"] - outs["fused"]).max())
            print(f"{threads:>7} {str(shape):>24} {calls:>5} {med['decomposed']:>13.2f} {med['fused']:>9.2f} "
                  f"{med['decomposed'] / med['fused']:>5.2f}x {med['decomposed'] * calls:>20.1f} "
                  f"{med['fused'] * calls:>7.1f} {diff:>10.1e}")
        print(f"{threads:>7} {'all shapes':>24} {sum(shapes.values()):>5} {'':>13} {'':>9} "
              f"{total['decomposed'] / total['fused']:>5.2f}x {total['decomposed']:>20.1f} {total['fused']:>7.1f}")


if __name__ == "__main__":
    main()

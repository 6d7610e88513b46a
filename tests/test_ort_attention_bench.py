"""benchmarks/ort_attention.py's two graphs compute the same attention as a plain numpy softmax(q k^T / sqrt(d)) v."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

ort = pytest.importorskip("onnxruntime")


def _bench():
    return load_benchmark("ort_attention")


@pytest.mark.parametrize("heads,queries,keys,dim", [(2, 16, 8, 4), (1, 12, 12, 32)])
def test_decomposed_and_fused_graphs_match_plain_attention(heads, queries, keys, dim):
    bench = _bench()
    rng = np.random.default_rng(0)
    feeds = {"q": rng.standard_normal((1, heads, queries, dim), dtype=np.float32),
             "k": rng.standard_normal((1, heads, keys, dim), dtype=np.float32),
             "v": rng.standard_normal((1, heads, keys, dim), dtype=np.float32)}
    s = feeds["q"].astype(np.float64) @ feeds["k"].astype(np.float64).transpose(0, 1, 3, 2) / np.sqrt(dim)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ feeds["v"].astype(np.float64)
    for build in (bench.decomposed_graph, bench.fused_graph):
        sess = ort.InferenceSession(build(heads, queries, keys, dim), providers=["CPUExecutionProvider"])
        got = sess.run(None, feeds)[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-5, build.__name__

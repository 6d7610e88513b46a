"""benchmarks/winograd.py: its Winograd F(2x2, 3x3) equals the direct convolution, and its inventory counts a frame's
convolutions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import load_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def winograd(monkeypatch):
    return load_benchmark("winograd", monkeypatch)


@pytest.mark.parametrize("cin, cout, h, w, bias", [(3, 5, 8, 6, True), (16, 8, 12, 12, False), (7, 7, 2, 4, True)])
def test_winograd_equals_direct_convolution(winograd, cin, cout, h, w, bias):
    g = torch.Generator().manual_seed(cin)
    x = torch.randn(1, cin, h, w, generator=g)
    weight = torch.randn(cout, cin, 3, 3, generator=g)
    b = torch.randn(cout, generator=g) if bias else None
    times = {"products": 0.0}
    got = winograd.winograd_conv3x3(x, winograd.winograd_weights(weight), b, times)
    want = F.conv2d(x, weight, b, padding=1)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5 * max(1.0, want.abs().max().item())
    # float64 all the way: the algorithm itself is exact (the weights' transform is computed in float64)
    got64 = winograd.winograd_conv3x3(x.double(), winograd.winograd_weights(weight.double()),
                                      None if b is None else b.double())
    assert torch.allclose(got64, F.conv2d(x.double(), weight.double(), None if b is None else b.double(), padding=1),
                          atol=1e-12)
    assert times["products"] >= 0.0


def test_inventory_counts_every_convolution_of_a_frame(winograd):
    flops, calls, frame_s = winograd.conv_inventory("fomm/tiny_fixture", 64)
    assert frame_s > 0 and sum(calls.values()) > 0
    for (cin, cout, k, s, g, h, w), f in flops.items():
        # FLOPs of one call: 2 * (output pixels) * cout * cin/g * k*k; output pixels = (h/s) * (w/s) for padding 'same'
        per_call = f / calls[(cin, cout, k, s, g, h, w)]
        assert per_call % (2 * cout * (cin // g) * k * k) == 0
        assert per_call // (2 * cout * (cin // g) * k * k) <= h * w

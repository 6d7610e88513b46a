"""The one value-range conversion (thkit.value_range): round trips, the (0, 1) no-op, validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from thkit.value_range import as_range, from_unit, is_unit, to_unit


@pytest.mark.parametrize("rng", [(0.0, 1.0), (-1.0, 1.0), (0, 255), (-0.5, 2.0)])
def test_round_trip_and_endpoints(rng):
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = from_unit(x, rng)
    assert float(y.min()) >= rng[0] and float(y.max()) <= rng[1]
    torch.testing.assert_close(to_unit(y, rng), x, rtol=0, atol=1e-6)
    ends = torch.tensor([float(rng[0]), float(rng[1])])
    torch.testing.assert_close(to_unit(ends, rng), torch.tensor([0.0, 1.0]))


def test_minus_one_one_is_the_usual_affine_map():
    x = torch.linspace(-1, 1, 9)
    assert torch.equal(to_unit(x, (-1, 1)), (x + 1) / 2)
    assert torch.equal(from_unit(to_unit(x, (-1, 1)), (-1, 1)), x)


def test_unit_range_is_the_same_object_and_nothing_is_clamped():
    x = torch.tensor([-0.2, 0.5, 1.3])
    assert to_unit(x, (0, 1)) is x and from_unit(x, [0.0, 1.0]) is x
    assert is_unit((0, 1)) and not is_unit((-1, 1))
    assert float(to_unit(torch.tensor([1.5]), (-1, 1))) == pytest.approx(1.25)


def test_numpy_and_float_inputs():
    a = np.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(from_unit(a, (-1, 1)), [-1.0, -0.5, 1.0])
    assert to_unit(0.0, (-1, 1)) == 0.5


@pytest.mark.parametrize("bad", [(1, 1), (1, 0), (0,), "ab", None])
def test_as_range_rejects_bad_ranges(bad):
    with pytest.raises(ValueError, match="high"):
        as_range(bad)


def test_as_range_returns_floats():
    assert as_range([-1, 1]) == (-1.0, 1.0) and isinstance(as_range((0, 1))[0], float)

"""Training pictures (thkit.engine.visualize): the sample grid's layout and labels, the flow colours
(torchvision's Middlebury wheel on pixel displacements), the value-range conversion of the columns."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.utils import flow_to_image

from thkit.engine.visualize import LABEL_HEIGHT, flow_to_rgb, make_grid, sample_columns
from thkit.layers import make_coordinate_grid


def _columns(n=2, h=10, w=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(f"col{j}", torch.rand(n, 3, h, w, generator=g)) for j in range(k)]


@pytest.mark.parametrize("pad", [0, 2, 3])
def test_grid_places_each_tile_on_white(pad):
    n, h, w, k = 2, 10, 12, 3
    cols = _columns(n, h, w, k)
    grid = make_grid(cols, pad=pad, label=False)
    assert grid.dtype == np.uint8 and grid.shape == (n * (h + pad) + pad, k * (w + pad) + pad, 3)
    mask = np.ones(grid.shape[:2], bool)
    for j, (_, img) in enumerate(cols):
        want = img.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            np.testing.assert_array_equal(grid[y:y + h, x:x + w], want[i])
            mask[y:y + h, x:x + w] = False
    assert (grid[mask] == 255).all()


def test_grid_header_carries_the_labels_and_values_are_clamped():
    cols = [("source", torch.full((1, 3, 16, 32), 2.0)), ("flow", torch.full((1, 1, 16, 32), -1.0))]
    grid = make_grid(cols, pad=2)
    assert grid.shape == (LABEL_HEIGHT + 16 + 4, 2 * 34 + 2, 3)
    header = grid[:LABEL_HEIGHT]
    assert (header[:, :34] < 128).any() and (header[:, 34:] < 128).any()  # one name drawn above each column
    assert (grid[LABEL_HEIGHT + 2:LABEL_HEIGHT + 18, 2:34] == 255).all()  # 2.0 clamped to white
    assert (grid[LABEL_HEIGHT + 2:LABEL_HEIGHT + 18, 36:68] == 0).all()   # one channel -> grey, -1 -> black


def test_grid_rejects_columns_of_different_shapes():
    with pytest.raises(ValueError, match="'b'"):
        make_grid([("a", torch.zeros(2, 3, 8, 8)), ("b", torch.zeros(2, 3, 8, 9))])


def _shifted(dx_px: float, dy_px: float, h=9, w=17):
    ident = make_coordinate_grid(h, w)
    return (ident + torch.tensor([dx_px * 2 / (w - 1), dy_px * 2 / (h - 1)]))[None]


def test_no_motion_is_white():
    assert torch.equal(flow_to_rgb(make_coordinate_grid(8, 8)[None]), torch.ones(1, 3, 8, 8))


@pytest.mark.parametrize("dx,dy", [(1, 0), (0, 1), (-1, 0), (1, 1), (-2, 3)])
def test_uniform_motion_has_torchvision_colour_of_its_pixel_direction(dx, dy):
    rgb = flow_to_rgb(_shifted(dx, dy))
    assert rgb.shape == (1, 3, 9, 17)
    # one colour everywhere, that of the pixel displacement, fully saturated (it is the largest in the batch)
    want = flow_to_image(torch.tensor([dx, dy], dtype=torch.float32).view(2, 1, 1)).float().view(3) / 255
    torch.testing.assert_close(rgb, want.view(1, 3, 1, 1).expand_as(rgb), rtol=0, atol=1.5 / 255)
    assert float(rgb.amin(1).max()) < 0.05  # saturated: some channel near 0


def test_opposite_directions_get_different_colours_and_smaller_motion_is_paler():
    grid = torch.cat([_shifted(2, 0), _shifted(-2, 0), _shifted(1, 0)])
    rgb = flow_to_rgb(grid)[:, :, 0, 0]
    assert (rgb[0] - rgb[1]).abs().max() > 0.3
    assert float(rgb[2].min()) > float(rgb[0].min()) + 0.3  # half the largest magnitude: half saturated


def test_flow_to_rgb_checks_its_input():
    with pytest.raises(ValueError, match="sampling grid"):
        flow_to_rgb(torch.zeros(1, 2, 8, 8))


def test_sample_columns_map_the_input_range_to_unit():
    x = torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)
    out = {"prediction": x * 1.5, "deformation": make_coordinate_grid(4, 4)[None],
           "occlusion_map": [torch.full((1, 1, 4, 4), 0.25)]}
    cols = dict(sample_columns({"source": x, "driving": -x}, out, (-1, 1)))
    assert list(cols) == ["source", "driving", "prediction", "flow", "occlusion"]
    torch.testing.assert_close(cols["source"], (x + 1) / 2)
    torch.testing.assert_close(cols["driving"], (1 - x) / 2)
    assert float(cols["prediction"].min()) == 0.0 and float(cols["prediction"].max()) == 1.0
    assert cols["flow"].shape == (1, 3, 8, 8) and torch.equal(cols["flow"], torch.ones(1, 3, 8, 8))
    torch.testing.assert_close(cols["occlusion"], torch.full((1, 3, 8, 8), 0.25))


def test_draw_keypoints_colour_per_index_and_sample_columns_draw_them():
    """FOMM's visualiser: a filled dot per keypoint in gist_rainbow(k / K); the training samples' source and driving
    columns show the model's keypoints."""
    from matplotlib import colormaps

    from thkit.engine.visualize import draw_keypoints, keypoint_colors

    colours = keypoint_colors(3)
    want = torch.tensor([colormaps["gist_rainbow"](k / 3)[:3] for k in range(3)], dtype=torch.float32)
    assert torch.equal(colours, want) and len({tuple(c.tolist()) for c in colours}) == 3
    img = torch.zeros(2, 3, 33, 33)
    kp = torch.tensor([[[-1.0, -1.0], [0.0, 0.0], [1.0, 0.5]]]).expand(2, -1, -1)  # pixels (0, 0) (16, 16) (32, 24)
    out = draw_keypoints(img, kp, radius=2)
    for k, (x, y) in enumerate([(0, 0), (16, 16), (32, 24)]):
        assert torch.equal(out[1, :, y, x], colours[k])
    assert torch.equal(out[0, :, 16, 18], colours[1]) and torch.equal(out[0, :, 16, 19], torch.zeros(3))
    # discs of radius 2 (13 pixels), cut by the image border: a quarter (6) at a corner, 9 at the right edge
    assert int((out[0].abs().sum(0) > 0).sum()) == 6 + 13 + 9
    assert torch.equal(img, torch.zeros_like(img))  # the input is not modified
    x = torch.full((1, 3, 33, 33), 0.5)
    res = dict(sample_columns({"source": x, "driving": x}, {"prediction": x, "kp_source": {"value": kp[:1]},
                                                           "kp_driving": {"value": kp[:1].flip(-1)}}, (0, 1)))
    assert torch.equal(res["source"][0, :, 16, 16], colours[1]) and torch.equal(res["source"][0, :, 24, 32],
                                                                                   colours[2])
    assert torch.equal(res["driving"][0, :, 32, 24], colours[2]) and torch.equal(res["prediction"], x)

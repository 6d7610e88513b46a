"""Paste-back (LivePortrait's --flag_pasteback): the animated crop blended into the full source under a feathered
mask; the output has the source's resolution and equals it exactly on and outside the crop's border."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thkit.inference.errors import InferenceError
from thkit.inference.paste import Paster, feather_mask, paste_back


def test_feather_mask_shape_and_edges():
    m = feather_mask(40, feather=0.1)  # ramp over 4 pixels
    assert m.shape == (40, 40) and m.dtype == np.float32
    assert (m[0] == 0).all() and (m[-1] == 0).all() and (m[:, 0] == 0).all() and (m[:, -1] == 0).all()
    assert (m[4:-4, 4:-4] == 1).all()
    assert 0 < m[1, 20] < m[2, 20] < m[3, 20] < 1  # rising from the edge
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(m, m[::-1, ::-1])
    with pytest.raises(InferenceError, match="at least 3 pixels"):
        feather_mask(2)


def test_paste_back_against_a_plain_blend():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)  # H x W, not square
    box = (30, 12, 48)  # left, top, side
    crop = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # the model's output size
    out = paste_back(src, crop, box)
    assert out.shape == src.shape and out.dtype == np.uint8
    left, top, side = box
    outside = np.ones(src.shape[:2], bool)
    outside[top + 1:top + side - 1, left + 1:left + side - 1] = False  # the crop's border ring stays the source
    np.testing.assert_array_equal(out[outside], src[outside])
    # inside: round(m * resized + (1 - m) * source), the crop resized with torch's antialiased bilinear
    face = F.interpolate(torch.from_numpy(crop).permute(2, 0, 1)[None].float(), size=(side, side), mode="bilinear",
                         align_corners=False)[0].permute(1, 2, 0).numpy()
    m = feather_mask(side)[..., None]
    region = src[top:top + side, left:left + side].astype(np.float32)
    want = np.clip(np.rint(m * face + (1 - m) * region), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[top:top + side, left:left + side], want)
    # the middle of the crop is the animated face
    np.testing.assert_array_equal(out[top + 10:top + side - 10, left + 10:left + side - 10],
                                  np.clip(np.rint(face[10:-10, 10:-10]), 0, 255).astype(np.uint8))


def test_paste_back_bad_box():
    src = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(InferenceError, match="not inside the 60x50 source"):
        Paster(src, (30, 10, 40))

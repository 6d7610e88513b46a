"""Computing a map only where a bilinear downsampling reads it (:mod:`thkit.layers.resize`), the warp at those
pixels (``GridSampleWarper.warp_at``) and SMAC's motion step using both (the ``warp_reads`` inference shortcut)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import thkit
from thkit.layers.blocks import reference_ops
from thkit.layers.resize import bilinear_reads, bilinear_weights, resize_from_reads
from thkit.warp.grid_sample import GridSampleWarper

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size,target", [((256, 256), (64, 32)), ((256, 128), (32, 32)), ((97, 61), (17, 60)),
                                         ((8, 8), (1, 3)), ((64, 64), (64, 64))])
def test_resize_from_reads_equals_interpolate(size, target):
    """On the rows and columns it lists, the resize gives F.interpolate's values of the whole map (align_corners
    True) to float rounding; every index torch reads is listed (the other pixels set to NaN change nothing)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    rows, cols = bilinear_reads(size[0], target[0]), bilinear_reads(size[1], target[1])
    want = F.interpolate(x, size=target, mode="bilinear", align_corners=True)
    sub = x[:, :, rows][:, :, :, cols]
    got = resize_from_reads(sub, bilinear_weights(size[0], target[0], rows), bilinear_weights(size[1], target[1], cols))
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 1e-5
    poisoned = torch.full_like(x, float("nan"))
    poisoned[:, :, torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = sub
    assert torch.equal(F.interpolate(poisoned, size=target, mode="bilinear", align_corners=True), want)
    if target[0] * 2 < size[0]:
        assert len(rows) < size[0]  # a downsampling reads fewer rows than it has


def test_bilinear_weights_name_a_missing_read():
    with pytest.raises(ValueError, match="reads index 1, which is not among reads"):
        bilinear_weights(5, 4, [0, 2, 3, 4])


@pytest.mark.parametrize("align_corners", [True, False])
def test_warp_at_is_the_whole_warp_on_those_pixels(align_corners):
    torch.manual_seed(0)
    warper = GridSampleWarper(align_corners=align_corners)
    feature, flow = torch.randn(2, 4, 32, 24), torch.rand(2, 8, 6, 2) * 2.2 - 1.1
    rows, cols = torch.tensor([0, 3, 4, 31]), torch.tensor([1, 2, 23])
    whole = warper(feature, flow)
    assert torch.equal(warper.warp_at(feature, flow, rows, cols), whole[:, :, rows][:, :, :, cols])


def test_smac_motion_step_reads_only_what_it_resizes():
    """SMAC at 256 px: the motion step at the 256-px scale warps and projects 160 x 160 pixels instead of 256 x 256
    (its resizes to 32 and 64 px read no others); the prediction is the full computation's to float rounding;
    reference_ops turns it off, and so does autograd (training computes everything)."""
    torch.manual_seed(0)
    model = thkit.create_model("smac/tiny_fixture")
    src, drv = torch.rand(1, 3, 256, 256) * 2 - 1, torch.rand(1, 3, 256, 256) * 2 - 1
    mcc = model.compensator.motion
    with torch.no_grad():
        with reference_ops("warp_reads"):
            want = model(src, drv)["prediction"]
        assert not mcc._plans
        got = model(src, drv)["prediction"]
    plans = [p for p in mcc._plans.values() if p]
    reads = len(set(bilinear_reads(256, 32)) | set(bilinear_reads(256, 64)))
    assert len(plans) == 1 and [len(i) for i in plans[0][:2]] == [reads, reads] and reads < 0.65 * 256
    assert float((got - want).abs().max()) < 1e-4
    mcc._plans.clear()
    model(src, drv)  # autograd on
    assert not mcc._plans

"""Motion edits realised as a warp of the predicted motion (thkit.warp.edit) and the face-prior control's ``warp``
mode: exact on known maps, composed into a model's animation, refused where it cannot run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from thkit.builder import build
from thkit.errors import ThkitError
from thkit.layers.grid import make_coordinate_grid
from thkit.recipe import load_recipe
from thkit.transfer_control import fit_pose, rotation_from_euler
from thkit.warp.edit import edit_grid, edit_motion, split_edit

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = load_recipe("semantic_prior/small")
TEMPLATE = torch.tensor(CFG.face_prior_template)


def _points(n=12, seed=0):
    return torch.rand(1, n, 2, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def test_edit_grid_is_the_identity_without_a_move_and_exact_for_an_affine_one():
    p = _points()
    grid = make_coordinate_grid(9, 11, dtype=torch.float64)
    assert torch.allclose(edit_grid(p.double(), p.double(), 9, 11)[0], grid, atol=1e-10)
    # a thin-plate spline reproduces an affine map exactly: E(x) = A x + b everywhere, not only at the points
    a = torch.tensor([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]], dtype=torch.float64) * 1.1
    b = torch.tensor([0.05, -0.1], dtype=torch.float64)
    src = p.double()
    e = edit_grid(src, src @ a.T + b, 9, 11)[0]
    assert torch.allclose(e, grid @ a.T + b, atol=1e-9)
    # and interpolates any correspondences exactly at the points (here: a non-affine move)
    dst = src + 0.05 * torch.sin(3 * src)
    from thkit.motion.tpsmm import ThinPlateSpline

    assert torch.allclose(ThinPlateSpline(src, dst, 0.0).warp_points(src), dst, atol=1e-9)


def test_edit_motion_composes_the_flow_and_every_occlusion_map():
    torch.manual_seed(0)
    h = w = 16
    deformation = make_coordinate_grid(h, w)[None] + 0.1 * torch.randn(1, h, w, 2)
    occ = [torch.rand(1, 1, 8, 8), torch.rand(1, 1, h, w)]
    src = _points()
    a = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # a quarter turn: E(x) = A x
    motion = {"deformation": deformation, "occlusion_map": occ, "heatmap": torch.ones(3)}
    out = edit_motion(motion, src, src @ a.T)
    e = make_coordinate_grid(h, w) @ a.T
    want = F.grid_sample(deformation.permute(0, 3, 1, 2), e[None], align_corners=True, padding_mode="border")
    assert torch.allclose(out["deformation"], want.permute(0, 2, 3, 1), atol=1e-5)
    # a quarter turn of a square grid lands on grid points: the maps are rotated copies
    assert torch.allclose(out["occlusion_map"][1][0, 0], torch.rot90(occ[1][0, 0], 1, (0, 1)), atol=1e-5)
    assert out["occlusion_map"][0].shape == (1, 1, 8, 8) and out["heatmap"] is motion["heatmap"]
    single = edit_motion({"deformation": deformation, "occlusion_map": occ[1]}, src, src @ a.T)
    assert torch.allclose(single["occlusion_map"], out["occlusion_map"][1])


def test_split_edit_checks_its_entries():
    kp = {"value": torch.zeros(1, 10, 2)}
    assert split_edit(kp) == (kp, None)
    with pytest.raises(ValueError, match="edit_to is missing"):
        split_edit(dict(kp, edit_from=torch.zeros(1, 5, 2)))
    with pytest.raises(ValueError, match=r"must both be \(B, N >= 3, 2\)"):
        split_edit(dict(kp, edit_from=torch.zeros(1, 5, 2), edit_to=torch.zeros(1, 4, 2)))


def test_the_semantic_prior_recipes_realise_edits_as_a_warp():
    for name in ("semantic_prior/small", "semantic_prior/vox256"):
        ctrl = build("motion", dict(load_recipe(name).control), path="control")
        assert ctrl.realise == "warp" and ctrl.outline.shape == (16, 3)


def _warp_control(**kw):
    spec = dict(CFG.control, realise="warp", outline=dict(radii=(0.75, 1.0), points=16))
    spec.update(kw)
    return build("motion", spec, path="control")


def _posed(yaw, pitch, roll, s=0.4, t=(0.05, -0.1)):
    r = rotation_from_euler(*(torch.tensor(math.radians(a)) for a in (yaw, pitch, roll)))
    return (s * (TEMPLATE @ r.T)[:, :2] + torch.tensor(t))[None]


def test_warp_control_keeps_the_keypoints_and_moves_them_through_the_warp():
    kp = {"value": _posed(12, -4, 3), "jacobian": torch.eye(2).expand(1, 10, 2, 2).clone()}
    plain = build("motion", dict(CFG.control, realise="keypoints"), path="control")(kp, {"yaw": 10.0, "pitch": -5.0})
    out = _warp_control()(kp, {"yaw": 10.0, "pitch": -5.0})
    assert torch.equal(out["value"], kp["value"]) and torch.equal(out["jacobian"], kp["jacobian"])
    assert out["edit_from"].shape == out["edit_to"].shape == (1, 10 + 16 + 8, 2)
    # keypoint k is drawn where the keypoint edit would put it: E(edited_k) = unedited_k
    assert torch.allclose(out["edit_from"][:, :10], plain["value"], atol=1e-6)
    assert torch.allclose(out["edit_to"][:, :10], kp["value"])
    # the outline turns with the head about its centre (a yaw narrows it by cos), the border stays put
    fit = fit_pose(kp["value"], TEMPLATE)
    ring_before = out["edit_to"][0, 10:26] - fit["translation"][0].float()
    assert torch.allclose(ring_before.norm(dim=-1).max(), fit["scale"][0].float() * 1.0, atol=1e-4)
    assert torch.equal(out["edit_from"][:, 26:], out["edit_to"][:, 26:])
    assert out["edit_to"][:, 26:].abs().max() == 1
    # roll alone: the whole outline turns in the image plane by the request
    roll = _warp_control()(kp, {"roll": 10.0})
    a, b = roll["edit_to"][0, 10:26], roll["edit_from"][0, 10:26]
    c = fit["translation"][0].float()
    ang = torch.atan2(b[:, 1] - c[1], b[:, 0] - c[0]) - torch.atan2(a[:, 1] - c[1], a[:, 0] - c[0])
    assert torch.allclose(torch.rad2deg(torch.remainder(ang + math.pi, 2 * math.pi) - math.pi),
                          torch.full((16,), 10.0), atol=1e-3)
    # nothing asked: the keypoints as they are, no warp
    assert set(_warp_control()(kp, {"yaw": 0.0})) == {"value", "jacobian"}
    # without an outline only the keypoints and the border pin the warp
    assert _warp_control(outline=None)(kp, {"yaw": 5.0})["edit_from"].shape == (1, 18, 2)
    with pytest.raises(ThkitError, match="control.realise='mesh': expected one of keypoints, warp"):
        _warp_control(realise="mesh")
    with pytest.raises(ThkitError, match="control.outline: expected"):
        _warp_control(outline=dict(radii=(0.75,), points=16))


@torch.no_grad()
def test_model_animates_a_warp_edit_as_the_composed_motion():
    """The model animates the unedited keypoints and composes the edit onto their motion: the same numbers as
    composing it by hand, and the edited keypoints never reach the motion network."""
    import thkit

    torch.manual_seed(0)
    model = thkit.create_model("semantic_prior/small", size=64).eval()
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64)
    cache = model.encode_source(src)
    kp = model.detect(drv)
    kp = {"value": kp["value"], "jacobian": kp["jacobian"]}
    edited = _warp_control()(kp, {"yaw": 15.0, "roll": -5.0})
    got = model.animate(cache, edited)
    plain = model.animate(cache, kp)
    want = edit_motion(plain, edited["edit_from"], edited["edit_to"])
    assert torch.allclose(got["deformation"], want["deformation"], atol=1e-6)
    deformed = F.grid_sample(src.expand(2, -1, -1, -1), F.interpolate(
        want["deformation"].permute(0, 3, 1, 2), size=(64, 64), mode="bilinear", align_corners=True
    ).permute(0, 2, 3, 1), align_corners=True)
    assert (got["deformed"] - deformed).abs().max() < 1e-4
    assert not torch.allclose(got["prediction"], plain["prediction"])
    # the keypoints the motion network saw are the unedited ones
    assert torch.allclose(got["kp_driving"]["value"], kp["value"])


def test_onnxruntime_backend_refuses_a_warp_edit_before_exporting(tmp_path, capsys, monkeypatch):
    """``thkit animate --backend onnxruntime --pose ...`` with a recipe that realises edits as a warp: one line, and no
    export is attempted; with the keypoint realisation the request is accepted (the frame graph takes keypoints)."""
    import thkit.backends as backends
    from thkit.cli import main as thkit_main
    from thkit.transfer_control import build_motion_control

    exported = []
    monkeypatch.setattr(backends, "backend_model", lambda *a, **k: exported.append(1) or (_ for _ in ()).throw(
        RuntimeError("stop here")))
    args = ["animate", "--recipe", "semantic_prior/small", "--random-weights", "-s", "x.png", "-d", "y.mp4",
            "--backend", "onnxruntime", "--pose", "yaw=10"]
    assert thkit_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "does not compose a warp-level motion edit" in err and "\n" not in err and not exported
    assert build_motion_control(CFG, pose="yaw=10").warps_motion
    assert not build_motion_control(CFG, align=True).warps_motion
    keypoints = dict(CFG, control=dict(CFG.control, realise="keypoints"))
    assert not build_motion_control(keypoints, pose="yaw=10").warps_motion

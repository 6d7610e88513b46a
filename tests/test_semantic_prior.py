"""Semantic face prior (Liu et al. 2023, our construction): pose fit, pose alignment, geometry loss, pose / expression
control, the recipes, the animate hooks (Python API and CLI)."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from thkit.builder import build
from thkit.errors import ThkitError
from thkit.inference.stream import MotionTransfer
from thkit.losses.geometry import FaceGeometryLoss, anchor_targets
from thkit.motion.face_prior import FacePriorControl, PoseAlignment, SimilarityAlignment
from thkit.recipe import load_recipe
from thkit.transfer_control import (
    ControlError,
    MotionControl,
    build_motion_control,
    fit_pose,
    parse_assignments,
    rotation_from_euler,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = load_recipe("semantic_prior/small")
TEMPLATE = torch.tensor(CFG.face_prior_template)


def posed(yaw, pitch, roll, s=0.4, t=(0.05, -0.1), template=TEMPLATE):
    """The template at a pose (degrees), orthographic: (1, K, 2) keypoints."""
    r = rotation_from_euler(*(torch.tensor(math.radians(a)) for a in (yaw, pitch, roll)))
    return (s * (template @ r.T)[:, :2] + torch.tensor(t))[None]


def eye_jac(n=1, k=10):
    return torch.eye(2).expand(n, k, 2, 2).clone()


# -- pose fit ----------------------------------------------------------------------------------------------------
def test_fit_pose_recovers_a_known_pose_in_the_renderer_convention():
    fit = fit_pose(posed(25.0, -12.0, 7.0, s=0.37, t=(0.1, 0.2)), TEMPLATE)
    assert torch.allclose(fit["angles"], torch.tensor([[25.0, -12.0, 7.0]]), atol=1e-3)
    assert torch.allclose(fit["scale"], torch.tensor([0.37]), atol=1e-5)
    assert torch.allclose(fit["translation"], torch.tensor([[0.1, 0.2]]), atol=1e-5)


def test_fit_pose_matches_the_synthetic_renderer_landmarks():
    """The renderer's own landmarks of a head turned by a known yaw: the template fit finds that yaw (within the
    identity's deviation from the mean template)."""
    from thkit.datasets.synthetic import HeadIdentity, HeadMotion, HeadRenderer

    idt = HeadIdentity.sample(np.random.default_rng([0, 2, 3]))
    motion = HeadMotion.sample(np.random.default_rng([0, 1, 3]), 2)
    motion.yaw[:] = [math.radians(-20), math.radians(25)]
    motion.pitch[:] = 0
    motion.roll[:] = 0
    motion.eye_open[:] = 1
    motion.mouth_open[:] = 0
    motion.brow[:] = 0
    lm = torch.from_numpy(HeadRenderer(32).render(idt, motion)["landmarks"]) * 2 / 31 - 1
    kp, _ = anchor_targets(lm, CFG.face_prior_anchors_synthetic)
    yaw = fit_pose(kp, TEMPLATE)["angles"][:, 0]
    assert torch.allclose(yaw, torch.tensor([-20.0, 25.0]), atol=4.0), yaw


# -- pose alignment ----------------------------------------------------------------------------------------------
def test_similarity_alignment_removes_a_known_offset_exactly():
    kp_s = {"value": posed(10, 5, 0), "jacobian": eye_jac()}
    q = torch.tensor([[math.cos(0.4), -math.sin(0.4)], [math.sin(0.4), math.cos(0.4)]])
    kp_d1 = {"value": 1.2 * kp_s["value"] @ q.T + torch.tensor([0.1, -0.05]), "jacobian": eye_jac()}
    out = SimilarityAlignment()(kp_s, kp_d1)
    assert torch.allclose(out["value"], kp_d1["value"], atol=1e-6)
    assert torch.allclose(out["jacobian"][0, 0], 1.2 * q, atol=1e-6)
    # through relative transfer: the first driving frame then gives its own keypoints (the offset is gone)
    mt = MotionTransfer(kp_s, relative=True, relative_jacobian=False, control=MotionControl(SimilarityAlignment()))
    assert torch.allclose(mt(kp_d1)["value"], kp_d1["value"], atol=1e-6)
    plain = MotionTransfer(kp_s, relative=True, relative_jacobian=False)
    assert torch.allclose(plain(kp_d1)["value"], kp_s["value"])  # without alignment the offset stays


def test_pose_alignment_removes_a_known_3d_pose_offset_exactly():
    """Source and first driving frame: the template at two poses (out of plane too); the aligned source is the first
    frame's keypoints, and the source's own shape (a residual) is carried, rotated, into the driving pose."""
    kp_s, kp_d1 = {"value": posed(-15, 8, 4, s=0.3)}, {"value": posed(20, -5, -6, s=0.45, t=(-0.1, 0.0))}
    al = PoseAlignment(CFG.face_prior_template)
    assert torch.allclose(al(kp_s, kp_d1)["value"], kp_d1["value"], atol=2e-6)
    # relative transfer from the aligned reference follows the driving pose: D_t = the template at another pose
    kp_dt = {"value": posed(30, -5, -6, s=0.45, t=(-0.1, 0.0))}
    mt = MotionTransfer(kp_s, relative=True, relative_jacobian=False, control=MotionControl(al))
    mt.set_initial(kp_d1)
    assert torch.allclose(mt(kp_dt)["value"], kp_dt["value"], atol=2e-6)
    # Jacobians exist and are finite after alignment
    out = al({"value": kp_s["value"], "jacobian": eye_jac()}, kp_d1)
    assert out["jacobian"].shape == (1, 10, 2, 2) and torch.isfinite(out["jacobian"]).all()


# -- geometry loss -----------------------------------------------------------------------------------------------
def _landmarks(b=2, n=22, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 2, generator=g) * 1.6 - 0.8


def test_geometry_loss_is_zero_on_landmarks_and_has_gradient():
    anchors = CFG.face_prior_anchors_synthetic
    lm = _landmarks()
    vis = torch.ones(2, 22, dtype=torch.bool)
    loss = FaceGeometryLoss(weight=3.0, anchors=anchors)
    target, _ = anchor_targets(lm, anchors)
    on = loss({"value": target.clone()}, {"value": target.clone()}, lm, lm, vis, vis)
    assert float(on) == 0.0
    kp = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    val = loss({"value": kp}, None, lm, None, vis, None)
    ref = 3.0 * (kp.detach() - torch.stack([lm[:, a].mean(1) for a in anchors], 1)).abs().mean()  # plain reference
    assert torch.allclose(val, ref, atol=1e-6)
    val.backward()
    assert kp.grad.abs().min() > 0  # every coordinate of every keypoint is pulled
    # an anchor with an invisible landmark adds nothing
    vis2 = vis.clone()
    vis2[:, 21] = False  # chin: keypoint 9
    kp2 = target.clone()
    kp2[:, 9] += 0.5
    assert float(loss({"value": kp2}, None, lm, None, vis2, None)) == 0.0
    assert float(loss({"value": kp2}, None, lm, None, vis, None)) > 0.0


def test_geometry_loss_mediapipe_landmarks_on_a_real_face(caplog):
    """The real-data option: MediaPipe's face mesh on scikit-image's astronaut.  Keypoints on the hand-placed
    landmarks of the same 10 face points give a small loss (the mesh anchors mean the same points), keypoints moved
    by 10 % of the face crop a large one; a picture with no face adds nothing."""
    from thkit.datasets.synthetic import ASTRONAUT_CROP, ASTRONAUT_LANDMARKS, _load_astronaut

    x0, y0, side = ASTRONAUT_CROP
    img = torch.from_numpy(_load_astronaut()[y0:y0 + side, x0:x0 + side].copy()).permute(2, 0, 1)[None] / 255
    hand = torch.from_numpy(ASTRONAUT_LANDMARKS - np.array([x0, y0])).float()[None] * 2 / (side - 1) - 1
    kp, _ = anchor_targets(hand, CFG.face_prior_anchors_synthetic)
    loss = FaceGeometryLoss(anchors=CFG.face_prior_anchors_mediapipe, landmarks="mediapipe", frames="driving")
    near = float(loss({"value": kp}, driving=img))
    far = float(loss({"value": kp + 0.2}, driving=img))
    assert near < 0.03 < 0.15 < far, (near, far)  # 0.03 in keypoint units = 3.6 px of the 240 px crop
    assert loss.skipped_images == 0 and loss.seen_images == 2
    with caplog.at_level(logging.WARNING, logger="thkit.losses.geometry"):
        assert float(loss({"value": kp.expand(2, -1, -1)}, driving=torch.cat([img, torch.full_like(img, 0.5)]))) < 0.03
        assert float(loss({"value": kp}, driving=torch.full_like(img, 0.5))) == 0.0
    msgs = [r.getMessage() for r in caplog.records]
    # said once (the first miss; the next report is at 10), naming the batch item and the running count
    assert len(msgs) == 1 and "found no face in 1 of 2 driving images of this batch (items 1)" in msgs[0]
    assert "1 of 4 images so far" in msgs[0] and loss.skipped_images == 2 and loss.seen_images == 5


def test_geometry_loss_bad_setup_is_one_line():
    with pytest.raises(Exception, match="anchor landmark index 30"):
        FaceGeometryLoss(anchors=[[30]])({"value": torch.zeros(1, 1, 2)}, None, _landmarks(1))
    with pytest.raises(Exception, match="no landmarks_driving"):
        FaceGeometryLoss(anchors=[[0]])({"value": torch.zeros(1, 1, 2)})
    with pytest.raises(Exception, match="'ground_truth' or 'mediapipe'"):
        FaceGeometryLoss(anchors=[[0]], landmarks="dlib")


# -- control -----------------------------------------------------------------------------------------------------
def _control() -> FacePriorControl:
    """The recipe's control realising its edits on the keypoints (the recipe's own realises them as a warp of the
    motion: tests/test_motion_edit.py)."""
    return build("motion", dict(CFG.control, realise="keypoints"), path="control")


def test_yaw_edit_of_zero_is_the_identity():
    ctrl = _control()
    kp = {"value": posed(12, -4, 3) + 0.01 * torch.randn(1, 10, 2), "jacobian": eye_jac() * 1.1}
    for pose in ({"yaw": 0.0}, {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}, None):
        out = ctrl(kp, pose)
        assert torch.equal(out["value"], kp["value"]) and torch.equal(out["jacobian"], kp["jacobian"])
    # the rotation path itself at zero: a tiny edit is (nearly) the identity too
    out = ctrl(kp, {"yaw": 1e-9})
    assert torch.allclose(out["value"], kp["value"], atol=1e-5)
    assert torch.allclose(out["jacobian"], kp["jacobian"], atol=1e-5)


def test_yaw_edit_rotates_the_fitted_pose_by_the_request():
    ctrl = _control()
    kp = {"value": posed(12, -4, 3)}
    out = ctrl(kp, {"yaw": 10.0, "pitch": -5.0})
    assert torch.allclose(out["value"], posed(22, -9, 3), atol=1e-5)
    assert torch.allclose(fit_pose(out["value"], TEMPLATE)["angles"], torch.tensor([[22.0, -9.0, 3.0]]), atol=1e-3)
    # an expression moves the lower lip down in the head frame (image y grows at zero roll), not the brows
    e = ctrl({"value": posed(0, 0, 0)}, expression={"mouth_open": 1.0})["value"] - posed(0, 0, 0)
    assert e[0, 8, 1] > 0.05 and e[0, 0].abs().max() < 1e-6


def test_pose_gain_rotates_the_keypoints_by_the_request_over_the_gain():
    """A calibrated control (the model turns its output by ``gain`` of a keypoint rotation) rotates the keypoints by
    ``request / gain``; the keypoint rotation it needs must stay within the trained range."""
    spec = dict(CFG.control, realise="keypoints")
    kp = {"value": posed(12, -4, 3)}
    calibrated = build("motion", dict(spec, pose_gain=dict(yaw=0.5)), path="control")
    assert calibrated.keypoint_angles({"yaw": 10.0}) == {"yaw": 20.0, "pitch": 0.0, "roll": 0.0}
    out = calibrated(kp, {"yaw": 10.0, "pitch": -5.0})  # pitch keeps its default gain of 1
    assert torch.allclose(out["value"], _control()(kp, {"yaw": 20.0, "pitch": -5.0})["value"])
    assert torch.allclose(fit_pose(out["value"], TEMPLATE)["angles"], torch.tensor([[32.0, -9.0, 3.0]]), atol=1e-3)
    with pytest.raises(ControlError) as e:  # 25 / 0.5 = 50 degrees of keypoint rotation > 40
        calibrated(kp, {"yaw": 25.0})
    msg = str(e.value)
    assert "\n" not in msg and "yaw=25" in msg and "pose_gain" in msg and "50.0" in msg
    assert "largest request is 20.0" in msg
    with pytest.raises(ThkitError, match="pose_gain.yaw=0: expected the measured fraction"):
        build("motion", dict(spec, pose_gain=dict(yaw=0.0)), path="control")
    with pytest.raises(ThkitError, match="pose_gain: unknown angle 'yew'"):
        build("motion", dict(spec, pose_gain=dict(yew=0.5)), path="control")


def test_out_of_range_and_malformed_requests_are_one_line_errors():
    ctrl = _control()
    with pytest.raises(ControlError) as e:
        ctrl({"value": posed(0, 0, 0)}, {"yaw": 55.0})
    msg = str(e.value)
    assert "\n" not in msg and "yaw=55" in msg and "|yaw| <= 40" in msg and "control.pose_range" in msg
    with pytest.raises(ControlError, match="roll=-16"):
        build_motion_control(CFG, pose="roll=-16")
    with pytest.raises(ControlError, match="unknown angle 'yew'"):
        build_motion_control(CFG, pose="yew=5")
    with pytest.raises(ControlError, match="expected NAME=VALUE"):
        build_motion_control(CFG, pose="yaw10")
    with pytest.raises(ControlError, match="must be a number"):
        build_motion_control(CFG, pose="yaw=ten")
    with pytest.raises(ControlError, match=r"mouth_open=1.5: outside .*\[-1, 1\]"):
        build_motion_control(CFG, expression="mouth_open=1.5")
    with pytest.raises(ControlError, match="unknown expression 'smile'"):
        build_motion_control(CFG, expression="smile=1")
    with pytest.raises(ControlError, match="defines no face-prior control"):
        build_motion_control(load_recipe("fomm/small"), pose="yaw=5")
    assert parse_assignments("yaw=10, pitch=-2.5", "--pose") == {"yaw": 10.0, "pitch": -2.5}
    # any keypoint model can ask for (similarity) alignment; a recipe's own alignment is its default
    assert type(build_motion_control(load_recipe("fomm/small"), align=True).alignment).__name__ == "SimilarityAlignment"
    assert build_motion_control(load_recipe("fomm/small")) is None
    assert type(build_motion_control(CFG).alignment).__name__ == "PoseAlignment"
    assert build_motion_control(CFG, align=False) is None


# -- recipes, training step, animate ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_batch(tmp_path_factory):
    from thkit.datasets.synthetic import SyntheticTalkingHeads

    root = tmp_path_factory.mktemp("synth") / "heads64"
    ds = SyntheticTalkingHeads(root=str(root), mode="train", image_size=64, synth=dict(videos=3, frames=4, seed=0),
                               augmentation=None)
    items = [ds[i] for i in range(2)]
    keys = ("source", "driving", "landmarks_source", "landmarks_driving", "visible_source", "visible_driving")
    return {k: torch.stack([it[k] for it in items]) for k in keys}


def test_recipes_build_forward_and_train_a_step(synth_batch):
    from mmengine.optim import OptimWrapperDict

    from thkit.engine.optim import AutocastOptimWrapper
    from thkit.engine.trainer import TalkingHeadTrainer

    vox = load_recipe("semantic_prior/vox256")
    assert vox.losses.geometry.landmarks == "mediapipe" and vox.model.keypoint_detector.num_kp == 10
    assert vox.pose_alignment.type == "PoseAlignment" and vox.control.pose_range.yaw == 30.0
    cfg = load_recipe("semantic_prior/small", size=64)
    torch.manual_seed(0)
    trainer = TalkingHeadTrainer(generator=cfg.model, losses=cfg.losses, image_size=64)
    wraps = OptimWrapperDict(generator=AutocastOptimWrapper(
        optimizer=torch.optim.Adam(trainer.generator.parameters(), lr=1e-3)))
    before = {n: p.detach().clone() for n, p in trainer.generator.keypoint_detector.named_parameters()}
    log = trainer.train_step(synth_batch, wraps)
    assert "geometry" in log and float(log["geometry"]) > 0 and torch.isfinite(log["loss_g"])
    assert any(not torch.equal(p, before[n]) for n, p in trainer.generator.keypoint_detector.named_parameters())
    with torch.no_grad():
        out = trainer.generator.eval()(synth_batch["source"], synth_batch["driving"])
    assert out["prediction"].shape == (2, 3, 64, 64)


def test_the_prior_on_smac_ties_its_keypoints_and_warps_its_edits(synth_batch, monkeypatch):
    """semantic_prior/smac_small: SMAC with 10 keypoints; the geometry loss reaches its keypoint detector, and a pose
    request is composed onto its motion before SMAC's compensation refines it."""
    import thkit
    import thkit.models.talking_head as th

    vox = load_recipe("semantic_prior/smac_vox256")
    assert vox.model.keypoint_detector.num_kp == vox.model.motion.num_kp == vox.model.compensator.motion.num_kp == 10
    assert vox.losses.geometry.landmarks == "mediapipe" and vox.control.realise == "warp"
    cfg = load_recipe("semantic_prior/smac_small", size=64)
    torch.manual_seed(0)
    model = thkit.create_model("semantic_prior/smac_small", size=64)
    spec = {k: v for k, v in cfg.losses.geometry.items() if k != "type"}
    loss = FaceGeometryLoss(**spec)(model.detect(synth_batch["driving"]), model.detect(synth_batch["source"]),
                                    synth_batch["landmarks_driving"], synth_batch["landmarks_source"],
                                    synth_batch["visible_driving"], synth_batch["visible_source"])
    loss.backward()
    assert float(loss.detach()) > 0 and any(p.grad is not None and p.grad.abs().sum() > 0
                                   for p in model.keypoint_detector.parameters())
    edits = []
    composed = th.edit_motion
    monkeypatch.setattr(th, "edit_motion", lambda m, a, b: edits.append(a.shape) or composed(m, a, b))
    model.eval()
    with torch.no_grad():
        cache = model.encode_source(synth_batch["source"][:1])
        kp = model.detect(synth_batch["driving"][:1])
        plain = model.animate(cache, kp)
        turned = model.animate(cache, build_motion_control(cfg, pose="yaw=20").edit(kp))
    assert edits == [(1, 10 + 16 + 8, 2)]
    assert (turned["prediction"] - plain["prediction"]).abs().max() > 1e-3


def test_api_animate_with_pose_and_alignment(synth_batch, monkeypatch):
    import thkit
    from thkit.motion.face_prior import PoseAlignment

    calls = []
    original = PoseAlignment.forward

    def spy(self, kp_source, kp_initial):  # the recipe's alignment runs once per video when asked, never otherwise
        calls.append(kp_source["value"].shape)
        return original(self, kp_source, kp_initial)

    monkeypatch.setattr(PoseAlignment, "forward", spy)
    import thkit.models.talking_head as th

    edits = []
    composed = th.edit_motion

    def edit_spy(motion, edit_from, edit_to):  # the recipe realises a pose request as a warp of the motion
        edits.append(edit_from.shape[0])
        return composed(motion, edit_from, edit_to)

    monkeypatch.setattr(th, "edit_motion", edit_spy)
    torch.manual_seed(0)
    model = thkit.create_model("semantic_prior/small", size=64)
    src = (synth_batch["source"][0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    drv = (torch.stack([synth_batch["driving"][0], synth_batch["source"][1]]).permute(0, 2, 3, 1) * 255)
    drv = drv.round().to(torch.uint8).numpy()
    plain = thkit.animate(src, drv, model, align=False)
    same = thkit.animate(src, drv, model, align=False, pose="yaw=0")
    assert np.array_equal(plain, same) and not calls and not edits
    turned = thkit.animate(src, drv, model, align=False, pose={"yaw": 20})
    assert not calls and sum(edits) == 2  # both frames edited
    # (with random weights the aligned output can round to the plain one in uint8: the alignment's numbers are
    # tested in test_pose_alignment_removes_a_known_3d_pose_offset_exactly; here, that the API runs it)
    aligned = thkit.animate(src, drv, model)  # the recipe's PoseAlignment
    assert calls == [(1, 10, 2)]
    assert turned.shape == plain.shape == aligned.shape == (2, 64, 64, 3)
    # (with random weights the output is nearly flat, so the warp's effect on it is tested on the motion in
    # tests/test_motion_edit.py; the keypoint-realised edit changes even these frames)
    keypoint_mode = dict(model.recipe.control, realise="keypoints")
    model.recipe.control = keypoint_mode
    assert not np.array_equal(thkit.animate(src, drv, model, align=False, pose={"yaw": 20}), plain)
    with pytest.raises(ControlError, match="outside the range"):
        thkit.animate(src, drv, model, pose="yaw=41")


def test_cli_pose_out_of_range_is_one_line(tmp_path, capsys):
    from thkit.cli import main

    rc = main(["animate", "--recipe", "semantic_prior/small", "--random-weights", "-s", str(tmp_path / "a.png"),
               "-d", str(tmp_path / "b.mp4"), "-o", str(tmp_path / "c.mp4"), "--pose", "yaw=60,pitch=0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: --pose yaw=60: outside the range") and "\n" not in err, err

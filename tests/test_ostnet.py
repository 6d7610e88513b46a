"""OSTNet's parts (thkit/motion/scale.py, thkit/layers/conditioning.py, ScaleAugmentation) and recipes.

* the rectifier with hand-set fiducials reproduces a known zoom (against kornia's ``scale`` and the analytic grid),
  and moves keypoints and Jacobians the same way;
* the scale-code injection changes a decoder's output only through ``z``;
* ScaleAugmentation zooms the driving frame around the face and keeps the target;
* ostnet/small and mix/smac_scale_rectified build, run and train a step.
"""
import pytest
import torch

from thkit.builder import build, build_model
from thkit.datasets.augment import AugmentationSequence, ScaleAugmentation, zoom
from thkit.errors import ThkitError
from thkit.layers import make_coordinate_grid
from thkit.motion.scale import ScaleTransformation, ThinPlateRectification, border_fiducials, keypoint_spread
from thkit.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

FACTOR = 1.25  # the driving face is 1.25x the source's
CENTRE = torch.tensor([0.1, -0.05])


def _hand_set_rectifier(num_kp: int = 10, factor: float = FACTOR, centre=CENTRE) -> ScaleTransformation:
    """A ScaleTransformation whose fiducials undo a zoom by ``factor`` around ``centre`` whatever its input: the
    control point p of the rectified frame is read at ``centre + factor (p - centre)`` in the driving frame."""
    rect = ScaleTransformation(num_kp=num_kp, code_dim=8, hidden=16)
    base = border_fiducials(rect.num_fiducials)
    with torch.no_grad():
        rect.fiducial_head.weight.zero_()
        rect.fiducial_head.bias.copy_((centre + factor * (base - centre) - base).reshape(-1))
    return rect


def test_border_fiducials_and_spread():
    base = border_fiducials(20)
    assert base.shape == (20, 2)
    assert torch.equal(base[:10, 1], torch.full((10,), -1.0)) and torch.equal(base[10:, 1], torch.ones(10))
    assert torch.allclose(base[:10, 0], torch.linspace(-1, 1, 10))
    with pytest.raises(ValueError, match="even number >= 4"):
        border_fiducials(5)
    pts = torch.randn(3, 7, 2)
    assert torch.allclose(keypoint_spread(2.5 * pts + 0.3), 2.5 * keypoint_spread(pts), atol=1e-5)


def test_hand_set_rectifier_reproduces_a_known_zoom():
    """Hand-set fiducials: the TPS sampling grid is the analytic zoom grid, the rectified image equals kornia's
    zoom of the driving image (the inverse of the zoom that made it), keypoints and Jacobians move by 1/factor."""
    import kornia

    rect = _hand_set_rectifier()
    kp = {"value": torch.rand(2, 10, 2) * 1.6 - 0.8, "jacobian": torch.randn(2, 10, 2, 2)}
    out = rect(kp, kp)
    warp = ThinPlateRectification(out["control"], out["fiducials"])
    grid = make_coordinate_grid(32, 32)
    assert torch.allclose(warp.sampling_grid(32, 32), (CENTRE + FACTOR * (grid - CENTRE)).expand(2, 32, 32, 2),
                          atol=1e-4)

    g = torch.Generator().manual_seed(0)
    source = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=48, mode="bilinear")
    driving = zoom(source, FACTOR, CENTRE)  # the source's face, 1.25x larger
    rectified = warp.warp_image(driving)
    # kornia: scale by 1/FACTOR around the same centre in pixels (align_corners=True: pixel = (x + 1) (W - 1) / 2)
    centre_px = ((CENTRE + 1) * 47 / 2).expand(2, 2)
    ref = kornia.geometry.transform.scale(driving, torch.full((2, 2), 1 / FACTOR), centre_px, align_corners=True,
                                          padding_mode="border")
    assert (rectified - ref).abs().max() < 2e-3
    # and it undoes the zoom: the rectified driving frame is the source (up to two bilinear resamplings)
    assert (rectified - source)[..., 6:-6, 6:-6].abs().mean() < 0.01

    moved = warp.warp_keypoints(kp)
    assert torch.allclose(moved["value"], CENTRE + (kp["value"] - CENTRE) / FACTOR, atol=1e-4)
    assert torch.allclose(moved["jacobian"], kp["jacobian"] / FACTOR, atol=1e-3)


def test_scale_rectified_motion_wraps_any_motion_and_exposes_the_code():
    """The wrapper runs the wrapped estimator on the rectified keypoints (identical to calling it on them) and returns
    the scale code, the fiducials and the rectified driving image; at initialisation it is the identity."""
    motion = build("motion", dict(
        type="ScaleRectifiedMotion",
        rectifier=dict(type="ScaleTransformation", num_kp=10, code_dim=8, hidden=16),
        motion=dict(type="FirstOrderMotion", num_kp=10, block_expansion=8, max_features=32, num_blocks=3)), "motion")
    motion.eval()
    g = torch.Generator().manual_seed(1)
    src, drv = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    kp_s = {"value": torch.rand(2, 10, 2, generator=g) - 0.5, "jacobian": torch.eye(2).repeat(2, 10, 1, 1)}
    kp_d = {"value": torch.rand(2, 10, 2, generator=g) - 0.5, "jacobian": torch.eye(2).repeat(2, 10, 1, 1)}
    with torch.no_grad():
        out = motion(src, kp_s, kp_d, driving=drv)
        assert out["scale_code"].shape == (2, 8) and out["fiducials"].shape == (2, 20, 2)
        assert (out["rectified_driving"] - drv).abs().max() < 1e-4  # identity warp at initialisation
        motion.rectifier = _hand_set_rectifier()
        out = motion(src, kp_s, kp_d, driving=drv)
        direct = motion.motion(src, kp_s, out["kp_driving_rectified"])
    assert torch.allclose(out["kp_driving_rectified"]["value"], CENTRE + (kp_d["value"] - CENTRE) / FACTOR, atol=1e-4)
    assert torch.equal(out["deformation"], direct["deformation"])
    assert motion.prepare_source(src, kp_s).keys() == motion.motion.prepare_source(src, kp_s).keys()


def test_rectifier_input_is_checked():
    rect = ScaleTransformation(num_kp=10, code_dim=8, hidden=16)
    with pytest.raises(ValueError, match=r"kp_driving\['value'\] as \(B, 10, 2\)"):
        rect({"value": torch.zeros(1, 10, 2)}, {"value": torch.zeros(1, 5, 2)})


@pytest.mark.parametrize("decoder", [
    dict(type="FOMMDecoder", block_expansion=8, max_features=32, num_down_blocks=2, num_bottleneck_blocks=2),
    dict(type="VQGANDecoder", nf=8, ch_mult=(1, 2), norm_groups=4, attn_levels=(), low_res_output="never"),
])
def test_scale_code_injection_changes_the_decoder_only_through_z(decoder):
    torch.manual_seed(0)
    plain = build("decoder", decoder, "decoder").eval()
    cond = build("decoder", dict(decoder, conditioning=dict(type="ScaleCodeInjection", dim=6)), "decoder").eval()
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("conditioning.") for k in missing)
    feats = [torch.rand(2, 16, 8, 8), torch.rand(2, 32, 8, 8)] if decoder["type"] == "FOMMDecoder" else \
        [torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]
    z1, z2 = torch.randn(2, 6), torch.randn(2, 6)
    run = lambda dec, z: dec(feats, {"motion": {"scale_code": z}})["prediction"]  # noqa: E731
    with torch.no_grad():
        # zero-initialised projections: the conditioned decoder starts as the plain one, whatever z is
        assert torch.equal(run(cond, z1), run(plain, z1))
        for p in cond.conditioning.parameters():
            p.normal_()
        a, b = run(cond, z1), run(cond, z2)
        assert (a - b).abs().max() > 1e-3  # z changes the output ...
        assert torch.equal(a, run(cond, z1.clone()))  # ... deterministically
        for lin in cond.conditioning.proj:
            lin.bias.zero_()
        assert torch.allclose(run(cond, torch.zeros(2, 6)), run(plain, z1), atol=1e-6)  # z = 0: no change
    with pytest.raises(ThkitError, match="needs the code 'scale_code' in the motion output"):
        cond(feats, {"motion": {"deformation": None}})
    with pytest.raises(ThkitError, match=r"as \(B, 6\)"):
        cond(feats, {"motion": {"scale_code": torch.zeros(2, 5)}})


def test_scale_augmentation_zooms_the_driving_frame_around_the_face():
    aug = ScaleAugmentation(factor_range=(1.3, 1.3))
    lm = torch.tensor([[0.2, 0.1], [0.4, 0.3], [0.3, -0.1]])
    drv = torch.rand(3, 32, 32)
    item = aug({"source": torch.rand(3, 32, 32), "driving": drv, "landmarks_driving": lm})
    c = lm.mean(0)
    assert torch.equal(item["driving_target"], drv)
    assert torch.allclose(item["driving"], zoom(drv, 1.3, c))
    assert torch.allclose(item["landmarks_driving"], c + 1.3 * (lm - c))
    assert float(item["scale_factor"]) == pytest.approx(1.3)
    # a zoom in keypoint coordinates: the output at c + 1.3 (p - c) reads the input at p
    grid = make_coordinate_grid(32, 32)
    assert torch.allclose(zoom(grid.permute(2, 0, 1), 1.3, c)[:, 16, 16], c + (grid[16, 16] - c) / 1.3, atol=1e-5)
    factors = [ScaleAugmentation().draw() for _ in range(200)]
    assert 0.7 <= min(factors) < 0.8 and 1.3 < max(factors) <= 1.4
    assert ScaleAugmentation(p=0.0).draw() == 1.0
    with pytest.raises(ValueError, match=r"0 < low <= high"):
        ScaleAugmentation(factor_range=(1.4, 0.7))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from thkit.datasets.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "heads64"
    write_synthetic_dataset(root, videos=4, frames=6, size=64, seed=0)
    return root


def _augmented_batch(synth_root, input_range=(0, 1)):
    from thkit.datasets.synthetic import SyntheticTalkingHeads

    torch.manual_seed(0)
    aug = dict(type="AugmentationSequence", steps=[dict(type="PairAugmentation"), dict(type="ScaleAugmentation")])
    ds = SyntheticTalkingHeads(root=str(synth_root), mode="train", image_size=64, augmentation=aug,
                               input_range=input_range, synth=dict(videos=4, frames=6, seed=0, size=64))
    assert isinstance(ds.augmentation, AugmentationSequence)
    assert ds.augmentation.steps[0].flip_pairs  # the dataset's flip pairs reached the pair augmentation
    items = [ds[i] for i in range(2)]
    return {k: torch.stack([it[k] for it in items]) for k in ("source", "driving", "driving_target")}


def _train(recipe, batch, steps, overrides=None):
    from mmengine.optim import OptimWrapperDict

    from thkit.engine.optim import AutocastOptimWrapper
    from thkit.engine.trainer import TalkingHeadTrainer

    cfg = load_recipe(recipe, overrides, size=64)
    torch.manual_seed(0)
    trainer = TalkingHeadTrainer(generator=cfg.model, losses=cfg.losses, image_size=64)
    before = {n: p.detach().clone() for n, p in trainer.generator.named_parameters()}
    wraps = OptimWrapperDict(generator=AutocastOptimWrapper(
        optimizer=torch.optim.Adam(trainer.generator.parameters(), lr=1e-3, betas=(0.5, 0.999))))
    logs = [trainer.train_step(batch, wraps) for _ in range(steps)]
    for log in logs:
        assert all(torch.isfinite(v).all() for v in log.values()), log
    moved = {n for n, p in trainer.generator.named_parameters() if not torch.equal(p, before[n])}
    return logs, moved, trainer.generator


def test_ostnet_small_trains_on_scale_augmented_pairs(synth_root):
    batch = _augmented_batch(synth_root)
    assert not torch.equal(batch["driving"], batch["driving_target"])
    logs, moved, gen = _train("ostnet/small", batch, 2)
    assert {"pixel", "perceptual", "rectification", "equivariance_value"} <= set(logs[0])
    assert any(n.startswith("motion.rectifier.fiducial_head") for n in moved)  # the fiducials learn
    assert any(n.startswith("decoder.conditioning.proj") for n in moved)  # so does the injection
    assert any(n.startswith("motion.motion.") for n in moved) and any(n.startswith("keypoint_detector") for n in moved)
    cfg = load_recipe("ostnet/small", size=64)
    assert cfg.motion_transfer.relative is False  # no anchor frame
    with torch.no_grad():
        out = gen.eval()(batch["source"], batch["driving"])
    assert out["prediction"].shape == (2, 3, 64, 64) and out["rectified_driving"].shape == (2, 3, 64, 64)


def test_mix_smac_scale_rectified_builds_runs_and_trains(synth_root):
    """The scale transformation in front of SMAC (at smac/small's widths): builds, conditions the VQGAN decoder on z,
    trains a step on [-1, 1] data whose target is the unzoomed frame."""
    small = load_recipe("smac/small").model
    overrides = {"model.keypoint_detector": small.keypoint_detector.to_dict(),
                 "model.motion.motion": small.motion.to_dict(), "model.encoder": small.encoder.to_dict(),
                 "model.compensator": small.compensator.to_dict(), "model.decoder": small.decoder.to_dict(),
                 "model.motion.rectifier.num_kp": small.motion.num_kp,
                 "losses.adversarial": None, "losses.low_res": None,  # smac/small's decoder has no low-res output
                 "losses.perceptual.allow_random": True,
                 "losses.perceptual.layer_weights": [1.0], "losses.perceptual.scales": [1]}
    cfg = load_recipe("mix/smac_scale_rectified", overrides, size=64)
    assert cfg.model.decoder.conditioning.type == "ScaleCodeInjection"
    model = build_model(cfg.model.to_dict(), image_size=64).eval()
    assert type(model.motion.motion).__name__ == "FirstOrderMotion" and model.decoder.conditioning is not None
    batch = _augmented_batch(synth_root, input_range=(-1, 1))
    assert batch["driving_target"].min() < -0.5  # converted to the recipe's range with the frames
    with torch.no_grad():
        out = model(batch["source"], batch["driving"])
    assert out["prediction"].shape == (2, 3, 64, 64) and "driving_kp_heatmap" in out
    logs, moved, _ = _train("mix/smac_scale_rectified", batch, 1, overrides)
    assert any(n.startswith("decoder.conditioning.proj") for n in moved)
    assert any(n.startswith("motion.rectifier.") for n in moved)

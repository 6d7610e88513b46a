"""Parts get what they need from the recipe and from declared hooks, not from special cases (issue #12, point 5).

* the builder hands the recipe's ``image_size`` to every part whose constructor takes it (an explicit value in the
  config wins; parts built inside a part inherit the value in force);
* the optional hooks of :mod:`thkit.interfaces` (``prepare_source``, ``warps_features``, ``codes``,
  ``uses_keypoints``, ``loss_inputs``) work for plugin parts that do not subclass the interface bases;
* the trainer's loss namespace gets a part's extra inputs (TPSMM's background predictor) through ``loss_inputs``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from thkit.builder import build, build_model, current_settings, recipe_settings
from thkit.errors import InterfaceError, RecipeError
from thkit.interfaces import (
    Part,
    allocation_codes,
    discriminate,
    loss_inputs,
    prepare_source,
    uses_keypoints,
    warps_features,
)
from thkit.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------------
# the builder hands image_size down
# --------------------------------------------------------------------------------------------------------
class _Sized(nn.Module):
    """A warper-like part that records the image size it was built for."""

    align_corners = True

    def __init__(self, image_size: int = 7):
        super().__init__()
        self.image_size = image_size

    def forward(self, feature, deformation, occlusion=None):
        return feature

    def warp_image(self, image, deformation):
        return image


class _Unsized(_Sized):
    """Takes no image size: must be built without one (not an unknown-argument error)."""

    def __init__(self, strength: float = 1.0):
        super().__init__()
        self.strength = strength


class _Holder(_Unsized):
    """Takes no image size itself but builds a sized part inside (which inherits the size in force)."""

    def __init__(self, inner: dict):
        super().__init__()
        self.inner = build("warper", inner, "inner")
        self.seen = current_settings()


class _SizedHolder(_Sized):
    """Takes an image size and builds a sized part inside."""

    def __init__(self, inner: dict, image_size: int = 7):
        super().__init__(image_size)
        self.inner = build("warper", inner, "inner")


class _AnyKwargs(_Sized):
    """``**kwargs`` names no image size: it must not receive one."""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs


def test_a_part_that_takes_image_size_gets_the_recipes():
    with recipe_settings(image_size=96):
        assert build("warper", dict(type=_Sized)).image_size == 96
        assert build("warper", dict(type=_Sized, image_size=40)).image_size == 40  # an explicit value wins
        assert build("warper", dict(type=_Unsized)).strength == 1.0  # not handed to a part that does not take it
        assert build("warper", dict(type=_AnyKwargs)).kwargs == {}
    assert build("warper", dict(type=_Sized)).image_size == 7  # no recipe size known: the part's default
    assert current_settings() == {}


def test_nested_parts_inherit_the_size_in_force():
    with recipe_settings(image_size=96):
        holder = build("warper", dict(type=_Holder, inner=dict(type=_Sized)), path="model.warper")
        assert holder.inner.image_size == 96 and holder.seen == {"image_size": 96}
        # an explicit size on the outer part is what the parts inside it inherit
        outer = build("warper", dict(type=_SizedHolder, image_size=48, inner=dict(type=_Sized)))
        assert outer.image_size == 48 and outer.inner.image_size == 48
        # ... unless the inner part sets its own
        outer = build("warper", dict(type=_SizedHolder, image_size=48, inner=dict(type=_Sized, image_size=16)))
        assert outer.inner.image_size == 16
    # build_model takes the recipe's size (and sets it only for that build)
    model = build_model(dict(type=_SizedHolder, inner=dict(type=_Sized)), image_size=80)
    assert model.image_size == 80 and model.inner.image_size == 80
    assert current_settings() == {}
    with pytest.raises(TypeError, match="unknown setting input_size"):
        with recipe_settings(input_size=3):
            pass


def test_a_constructors_size_error_is_one_line_with_the_recipe_path():
    class _Picky(_Sized):
        def __init__(self, image_size: int = 64):
            if image_size % 8:
                raise ValueError(f"image_size={image_size} px: use a multiple of 8 px")
            super().__init__(image_size)

    with recipe_settings(image_size=100):
        with pytest.raises(RecipeError) as e:
            build("warper", dict(type=_Holder, inner=dict(type=_Picky)), path="model.warper")
    msg = str(e.value)
    assert msg.startswith("model.warper.inner: _Picky: image_size=100 px") and "\n" not in msg


# --------------------------------------------------------------------------------------------------------
# optional hooks with plugin parts that do not subclass the interface bases
# --------------------------------------------------------------------------------------------------------
class _PlainMotion(nn.Module):
    """A plugin motion estimator without ``prepare_source``: the identity flow, no occlusion.  Its ``forward``
    takes no ``source_cache``, so the model must not pass one."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, source, kp_source, kp_driving, driving=None):
        b, _, h, w = source.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h // 4), torch.linspace(-1, 1, w // 4), indexing="ij")
        grid = torch.stack([xs, ys], -1).expand(b, h // 4, w // 4, 2) * self.scale
        return {"deformation": grid, "occlusion_map": []}


class _CachingMotion(_PlainMotion):
    """A plugin motion estimator with its own ``prepare_source`` (still not a MotionEstimator subclass)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def prepare_source(self, source, kp_source):
        self.calls.append("prepare")
        return {"mean": source.mean()}

    def forward(self, source, kp_source, kp_driving, driving=None, source_cache=None):
        self.calls.append("cached" if source_cache is not None else "uncached")
        return super().forward(source, kp_source, kp_driving, driving)


class _PassCompensator(nn.Module):
    """A plugin compensator without ``warps_features``: it must get the model's pre-warped features."""

    def __init__(self):
        super().__init__()
        self.got = None

    def forward(self, warped, ctx):
        self.got = warped
        return {"features": warped if warped is not None else [ctx["warper"](f, ctx["motion"]["deformation"])
                                                               for f in ctx["features"]]}


class _OwnWarpCompensator(_PassCompensator):
    warps_features = True  # declared without subclassing Compensator


def _fomm_with(**parts):
    cfg = load_recipe("fomm/small")
    m = cfg.model.to_dict()
    m.update(parts)
    torch.manual_seed(0)
    return build_model(m, image_size=cfg.image_size).eval()


def test_plugin_motion_and_compensator_work_through_the_hooks():
    src, drv = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    model = _fomm_with(motion=dict(type=_PlainMotion), compensator=dict(type=_PassCompensator))
    assert prepare_source(model.motion, src, {}) is None and not warps_features(model.compensator)
    with torch.no_grad():
        out = model(src, drv)
    assert out["prediction"].shape == (1, 3, 64, 64)
    assert isinstance(model.compensator.got, list) and len(model.compensator.got) > 0  # pre-warped by the model
    assert "motion_source" not in model.encode_source(src)

    model = _fomm_with(motion=dict(type=_CachingMotion), compensator=dict(type=_OwnWarpCompensator))
    assert warps_features(model.compensator)
    with torch.no_grad():
        out = model(src, drv)
    assert out["prediction"].shape == (1, 3, 64, 64)
    assert model.compensator.got is None  # it warps itself: the model passes no pre-warped features
    assert model.motion.calls == ["prepare", "cached"]  # its own prepare_source, its result passed back
    assert not warps_features(None)


def test_builtin_parts_keep_their_hooks():
    from thkit.codebook.allocation import ProgressiveAllocation
    from thkit.interfaces import CodeAllocation

    cfg = load_recipe("fomm/small")
    model = build_model(cfg.model.to_dict(), image_size=cfg.image_size)
    src = torch.rand(1, 3, 64, 64)
    assert set(prepare_source(model.motion, src, model.keypoint_detector(src))) == {"image", "gaussian"}
    assert allocation_codes(ProgressiveAllocation(), 1, 4, 64) == slice(0, 32)

    class _PlainAllocation:  # a plugin allocation with indices only
        def indices(self, scale, num_scales, num_codes):
            return torch.arange(scale, num_codes, num_scales)

    assert torch.equal(allocation_codes(_PlainAllocation(), 1, 4, 16), torch.tensor([1, 5, 9, 13]))

    class _Sub(CodeAllocation):  # a subclass gets the declared default (indices)
        def indices(self, scale, num_scales, num_codes):
            return torch.tensor([scale])

    assert torch.equal(allocation_codes(_Sub(), 3, 4, 16), torch.tensor([3]))


class _ImageOnlyDisc(nn.Module):
    """A plugin discriminator whose forward takes the image only (calling it with kp= is a TypeError)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 4, stride=2, padding=1)

    def forward(self, image):
        x = torch.nn.functional.leaky_relu(self.conv(image), 0.2)
        return {"feature_maps": {"1": [x]}, "prediction_map": {"1": x}}


class _KeypointDisc(_ImageOnlyDisc):
    uses_keypoints = True

    def forward(self, image, kp=None):
        self.kp = kp
        return super().forward(image)


def test_discriminate_passes_keypoints_only_to_a_discriminator_that_takes_them():
    from thkit.models.discriminator import MultiScaleDiscriminator
    from thkit.models.discriminator_vqgan import VQGANDiscriminator

    img, kp = torch.rand(2, 3, 32, 32), {"value": torch.zeros(2, 5, 2)}
    assert not uses_keypoints(_ImageOnlyDisc())
    assert discriminate(_ImageOnlyDisc(), img, kp)["prediction_map"]["1"].shape == (2, 1, 16, 16)
    d = _KeypointDisc()
    discriminate(d, img, kp)
    assert d.kp is kp
    wrapped = nn.DataParallel(_KeypointDisc())  # the hook is read from the wrapped module
    assert uses_keypoints(wrapped)
    discriminate(wrapped, img, kp)
    assert wrapped.module.kp is kp
    with pytest.raises(InterfaceError, match="_KeypointDisc is conditioned on keypoints"):
        discriminate(_KeypointDisc(), img, None)
    assert uses_keypoints(MultiScaleDiscriminator(use_kp=True, num_kp=5, block_expansion=4, max_features=8))
    assert not uses_keypoints(MultiScaleDiscriminator(block_expansion=4, max_features=8))
    assert not uses_keypoints(VQGANDiscriminator(ndf=4, n_layers=1))


def test_loss_inputs_defaults_and_checks():
    assert loss_inputs(nn.Conv2d(1, 1, 1)) == {} and loss_inputs(None) == {}

    class _Bad(Part):
        def loss_inputs(self):
            return ["not", "a", "dict"]

    with pytest.raises(InterfaceError, match=r"_Bad.loss_inputs\(\) must return a dict"):
        loss_inputs(_Bad())


# --------------------------------------------------------------------------------------------------------
# the trainer: generic loss inputs and discriminator calls
# --------------------------------------------------------------------------------------------------------
def test_trainer_namespace_gets_the_background_predictor_through_loss_inputs():
    """TPSMM's background cycle loss reads ``bg_predictor``, which the motion part offers through ``loss_inputs``
    (the trainer knows no part by name); the loss is non-zero and its gradient reaches the predictor."""
    from thkit.engine.trainer import TalkingHeadTrainer

    cfg = load_recipe("tpsmm/tiny_fixture")
    torch.manual_seed(0)
    trainer = TalkingHeadTrainer(generator=cfg.model, image_size=cfg.image_size,
                                 losses=dict(background=dict(type="BackgroundCycleLoss", weight=10.0)))
    gen = trainer.gen.train()
    assert loss_inputs(gen.motion) == {"bg_predictor": gen.motion.bg_predictor}
    with torch.no_grad():  # the head starts at the identity, whose cycle is exact: move it off
        gen.motion.bg_predictor.backbone.fc.weight.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    data = {"source": torch.rand(2, 3, 64, 64, generator=g), "driving": torch.rand(2, 3, 64, 64, generator=g)}
    out = gen(data["source"], data["driving"])
    assert "bg_param" in out
    ns = trainer.namespace(data, out)
    assert ns["bg_predictor"] is gen.motion.bg_predictor
    terms = trainer.losses(ns)
    assert float(terms["background"].detach()) > 0
    terms["background"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.motion.bg_predictor.parameters())


def test_trainer_namespace_merges_a_plugin_parts_loss_inputs_without_replacing_keys():
    from thkit.engine.trainer import TalkingHeadTrainer

    class _OfferingMotion(_PlainMotion):  # not a Part subclass
        def loss_inputs(self):
            return {"motion_prior": self.scale, "source": "must not replace the batch's source"}

    cfg = load_recipe("fomm/small")
    m = cfg.model.to_dict()
    m["motion"] = dict(type=_OfferingMotion)
    trainer = TalkingHeadTrainer(generator=m, losses=dict(pixel=dict(type="L1Loss", weight=1.0)),
                                 image_size=cfg.image_size)
    data = {"source": torch.rand(1, 3, 64, 64), "driving": torch.rand(1, 3, 64, 64)}
    with torch.no_grad():
        ns = trainer.namespace(data, trainer.gen(data["source"], data["driving"]))
    assert ns["motion_prior"] is trainer.gen.motion.scale
    assert ns["source"] is data["source"]


def test_trainer_calls_a_plugin_discriminator_without_keypoints():
    """A GAN step with a plugin discriminator whose forward takes the image only (it does not declare
    ``uses_keypoints``): both sides run and the discriminator learns."""
    from mmengine.optim import OptimWrapper, OptimWrapperDict

    from thkit.engine.trainer import TalkingHeadTrainer

    cfg = load_recipe("fomm/tiny_fixture")
    torch.manual_seed(0)
    trainer = TalkingHeadTrainer(
        generator=cfg.model, image_size=cfg.image_size, discriminator=dict(type=_ImageOnlyDisc),
        losses=dict(pixel=dict(type="L1Loss", weight=1.0),
                    adversarial=dict(type="LSGANLoss", weight=1.0, discriminator_weight=1.0, feature_matching=[1.0])))
    wraps = OptimWrapperDict(
        generator=OptimWrapper(torch.optim.SGD(trainer.generator.parameters(), lr=1e-3)),
        discriminator=OptimWrapper(torch.optim.SGD(trainer.discriminator.parameters(), lr=1e-2)))
    d0 = [p.detach().clone() for p in trainer.discriminator.parameters()]
    log = trainer.train_step({"source": torch.rand(1, 3, 64, 64), "driving": torch.rand(1, 3, 64, 64)}, wraps)
    assert "loss_d" in log and torch.isfinite(log["loss_g"])
    assert any(not torch.equal(a, p) for a, p in zip(d0, trainer.discriminator.parameters()))

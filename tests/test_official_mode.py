"""Official-mode switches for the training quirks of the official SMAC / MCNet / DaGAN code: each paper recipe trains
as the official code does (the official value is its setting) and thkit's correction is an opt-in; each switch does
what it claims.  References are the official expressions written out here (SMAC basicsr/losses/losses.py
KPDistanceLoss and basicsr/models/appmotioncomp_model.py Transform; MCNet / DaGAN modules/model.py).

Switches (docs/methods/smac.md, recipes/smac/README.md):
* ``losses.keypoint_distance.mode``: 'official' (sign() penalty, zero gradient) / 'hinge' (thkit, trains);
* ``losses.equivariance.align_corners``: False (official, torch >= 1.3 default) / True (identity warp is exact);
* ``losses.perceptual.official_smac_range_quirk`` (SMAC): True (official: [-1, 1] into the ImageNet VGG as [0, 1]) /
  False (mapped to [0, 1] first).
"""
from functools import cache

import pytest
import torch
import torch.nn.functional as F

from thkit.errors import RecipeError
from thkit.layers import make_coordinate_grid
from thkit.losses.bundle import build_loss_bundle
from thkit.losses.equivariance import EquivarianceLoss, RandomTPSTransform
from thkit.losses.keypoint import KeypointDistanceLoss
from thkit.losses.perceptual import PerceptualPyramidLoss
from thkit.recipe import load_recipe

SMAC_PAPER = ("smac/vox256", "smac/baseline", "smac/smc", "smac/mmc", "smac/mmc_sac", "smac/full", "smac/shared",
              "smac/equal", "smac/progressive")
PAPER = (*SMAC_PAPER, "mcnet/vox256", "dagan/vox256")
KP_WEIGHT = {"smac": 1.0, "mcnet": 10.0, "dagan": 10.0}  # SMAC train.yml 1; MCNet README / DaGAN yaml 10


def official_kp_distance(kp_driving, kp_source, weight):
    """The official loss, line for line (``.cuda()`` left out)."""
    num_kp = kp_source["value"].shape[1]
    sk = kp_source["value"].unsqueeze(2) - kp_source["value"].unsqueeze(1)
    dk = kp_driving["value"].unsqueeze(2) - kp_driving["value"].unsqueeze(1)
    source_dist_loss = (-torch.sign((torch.sqrt((sk * sk).sum(-1) + 1e-8) + torch.eye(num_kp) * 0.2) - 0.2) + 1).mean()
    driving_dist_loss = (-torch.sign((torch.sqrt((dk * dk).sum(-1) + 1e-8) + torch.eye(num_kp) * 0.2) - 0.2) + 1).mean()
    return (source_dist_loss + driving_dist_loss) * weight


def _keypoint_net():
    """A tiny keypoint predictor whose parameters get the loss's gradient: 10 keypoints, some closer than 0.2."""
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 20)
    z = torch.randn(2, 8)

    def kp():
        return {"value": 0.3 * torch.tanh(net(z)).view(2, 10, 2)}
    return net, kp


@cache
def _recipe(name):
    return load_recipe(name)


def _recipe_kp_loss(recipe):
    cfg = _recipe(recipe)
    return build_loss_bundle({"keypoint_distance": cfg.losses.keypoint_distance})["keypoint_distance"]


# ---- keypoint distance ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [1.0, 10.0])
def test_official_mode_is_the_official_loss(weight):
    g = torch.Generator().manual_seed(1)
    kd, ks = ({"value": torch.rand(3, 15, 2, generator=g) * 0.6 - 0.3} for _ in range(2))
    ours = KeypointDistanceLoss(weight=weight, mode="official")(kd, ks)
    ref = official_kp_distance(kd, ks, weight)
    assert float(ref) > 0  # some pairs are closer than 0.2
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


@pytest.mark.parametrize("recipe", PAPER)
def test_paper_recipes_train_the_official_kp_distance_whose_gradient_is_zero(recipe):
    loss = _recipe_kp_loss(recipe)
    assert loss.mode == "official" and loss.weight == KP_WEIGHT[recipe.split("/")[0]] and loss.margin == 0.2
    net, kp = _keypoint_net()
    kd, ks = kp(), kp()
    value = loss(kd, ks)
    torch.testing.assert_close(value, official_kp_distance(kd, ks, loss.weight), rtol=0, atol=0)
    assert float(value.detach()) > 0  # it sees the close pairs ...
    value.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(gr is not None and torch.count_nonzero(gr) == 0 for gr in grads)  # ... but cannot move them


def test_hinge_opt_in_trains():
    """The correction (smac/small's setting; an opt-in for the paper recipes) has a gradient that separates."""
    loss = _recipe_kp_loss("smac/small")
    assert loss.mode == "hinge"
    opt_in = load_recipe("smac/vox256", {"losses.keypoint_distance.mode": "hinge"})
    assert build_loss_bundle({"k": opt_in.losses.keypoint_distance})["k"].mode == "hinge"
    net, kp = _keypoint_net()
    value = loss(kp(), kp())
    value.backward()
    grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in net.parameters()))
    assert float(value.detach()) > 0 and float(grad_norm) > 1e-3
    # gradient steps push the close keypoints apart: the penalty falls
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        loss(kp(), kp()).backward()
        opt.step()
    assert float(loss(kp(), kp()).detach()) < 0.5 * float(value.detach())


def test_unknown_mode_is_one_clear_error():
    with pytest.raises(ValueError, match=r"mode must be one of 'official', 'hinge'.*got 'sign'"):
        KeypointDistanceLoss(mode="sign")


# ---- equivariance warp ----------------------------------------------------------------------------------------
def official_transform_frame(frame, theta, control_params, points_tps=5):
    """SMAC / MCNet / DaGAN ``Transform.transform_frame``: FOMM's random TPS, grid_sample without align_corners
    (``False`` on torch >= 1.3; written out here so no warning is raised)."""
    bs, _, h, w = frame.shape
    coords = make_coordinate_grid(h, w).view(1, h * w, 2)
    th = theta.unsqueeze(1)
    out = (torch.matmul(th[:, :, :, :2], coords.unsqueeze(-1)) + th[:, :, :, 2:]).squeeze(-1)
    cp = make_coordinate_grid(points_tps, points_tps).view(1, 1, -1, 2)
    dist = torch.abs(coords.view(coords.shape[0], -1, 1, 2) - cp).sum(-1)
    res = (dist**2 * torch.log(dist + 1e-6) * control_params).sum(dim=2).view(bs, h * w, 1)
    grid = (out + res).view(bs, h, w, 2)
    return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=False)


@pytest.mark.parametrize("recipe", PAPER)
def test_paper_recipes_warp_as_the_official_code(recipe):
    loss = build_loss_bundle({"equivariance": _recipe(recipe).losses.equivariance})["equivariance"]
    assert loss.align_corners is False
    g = torch.Generator().manual_seed(2)
    t = RandomTPSTransform.sample(2, generator=g)
    frame = torch.rand(2, 3, 32, 32, generator=g)
    ref = official_transform_frame(frame, t.theta, t.control_params.view(2, 1, -1))
    ours = t.warp_image(frame, loss.align_corners, loss.padding_mode)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)  # float32: the grid's operation order differs
    assert (t.warp_image(frame, True, loss.padding_mode) - ref).abs().max() > 1e-2  # the switch matters


def _centroid_detector(image):
    """An exactly equivariant 'detector': the intensity centroid of each channel (Jacobian = identity)."""
    b, c, h, w = image.shape
    grid = make_coordinate_grid(h, w).view(1, 1, h * w, 2)
    p = image.flatten(2).softmax(-1).unsqueeze(-1)
    value = (p * grid).sum(2)
    return {"value": value, "jacobian": torch.eye(2).expand(b, c, 2, 2)}


def test_align_corners_opt_in_makes_the_identity_exact():
    """Under the identity transform an equivariant detector should cost nothing: it does with the correction
    (``True``, smac/small's setting); the official ``False`` warp samples half a pixel outside and is penalised."""
    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 32, 32, generator=g) * 4
    identity = RandomTPSTransform.identity(2)
    torch.testing.assert_close(identity.warp_image(image, align_corners=True), image, rtol=0, atol=1e-5)
    assert (identity.warp_image(image, align_corners=False) - image).abs().max() > 0.1
    kp = _centroid_detector(image)
    kw = dict(value_weight=1.0, jacobian_weight=1.0)
    corrected = EquivarianceLoss(align_corners=True, **kw)(image, kp, _centroid_detector, transform=identity)
    official = EquivarianceLoss(align_corners=False, **kw)(image, kp, _centroid_detector, transform=identity)
    assert float(corrected["value"]) < 1e-6
    assert float(official["value"]) > 1e-4
    assert _recipe("smac/small").losses.equivariance.align_corners is True
    assert load_recipe("smac/vox256", {"losses.equivariance.align_corners": True}).losses.equivariance.align_corners


# ---- SMAC perceptual input range ------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", [*SMAC_PAPER, "smac/small"])
def test_smac_recipes_feed_the_vgg_as_the_official_code(recipe):
    assert _recipe(recipe).losses.perceptual.official_smac_range_quirk is True


def test_range_switch_changes_what_the_vgg_sees():
    kw = dict(layer_weights=[1.0], scales=[1], input_range=(-1, 1), allow_random=True)
    official = PerceptualPyramidLoss(official_smac_range_quirk=True, **kw)
    corrected = PerceptualPyramidLoss(official_smac_range_quirk=False, **kw)
    x = torch.linspace(-1, 1, 5).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    torch.testing.assert_close(official.to_unit_range(x), x)  # [-1, 1] as if [0, 1]
    torch.testing.assert_close(corrected.to_unit_range(x), (x + 1) / 2)


# ---- MCNet: no adversarial loss, NaN batches skipped ------------------------------------------------------------
def test_mcnet_trains_without_adversarial_loss_and_skips_nan_batches():
    """--generator_gan 0: the adversarial term is not built (so no discriminator step); weight > 0 opts in."""
    cfg = _recipe("mcnet/vox256")
    assert cfg.losses.adversarial.weight == 0 and cfg.trainer.nonfinite == "skip"
    official = build_loss_bundle({"adversarial": cfg.losses.adversarial})
    assert official.disabled == ["adversarial"] and "adversarial" not in official
    opt_in = load_recipe("mcnet/vox256", {"losses.adversarial.weight": 1.0})
    assert "adversarial" in build_loss_bundle({"adversarial": opt_in.losses.adversarial})


def test_mcnet_clips_the_generator_as_one_network():
    """Official train.py: clip_grad_norm_(generator, 10) and clip_grad_norm_(kp_detector, 10).  A group of thkit parts
    is clipped with one joint norm (the reference: torch's clip over the group's parameters); listing the parts one
    by one (the opt-in) clips each on its own."""
    from torch import nn

    from thkit.engine.parts import PartClipOptimWrapper

    parts = _recipe("mcnet/vox256").optim_wrapper.generator.clip_parts.parts
    assert [p if isinstance(p, str) else list(p) for p in parts] == [
        "keypoint_detector", ["motion", "encoder", "compensator", "decoder"]]

    def model_with_grads():
        torch.manual_seed(5)
        m = nn.Module()
        for name, scale in (("kp", 3.0), ("motion", 8.0), ("decoder", 0.5)):
            setattr(m, name, nn.Linear(4, 4))
            for p in getattr(m, name).parameters():
                p.grad = torch.randn_like(p) * scale
        return m

    def clipped(groups):
        m = model_with_grads()
        wrap = PartClipOptimWrapper(optimizer=torch.optim.SGD(m.parameters(), lr=0.0),
                                    clip_parts=dict(parts=groups, max_norm=10, norm_type=2))
        with wrap.optim_context(m):
            pass
        wrap.step()
        return {n: p.grad for n, p in m.named_parameters()}

    ref = model_with_grads()
    torch.nn.utils.clip_grad_norm_(ref.kp.parameters(), 10, norm_type=2)
    torch.nn.utils.clip_grad_norm_([*ref.motion.parameters(), *ref.decoder.parameters()], 10, norm_type=2)
    official = clipped(["kp", ["motion", "decoder"]])
    for n, p in ref.named_parameters():
        torch.testing.assert_close(official[n], p.grad)
    per_part = clipped(["kp", "motion", "decoder"])
    assert not torch.allclose(per_part["decoder.weight"], official["decoder.weight"])  # the switch matters
    with pytest.raises(RecipeError, match="expected part paths or lists of part paths"):
        PartClipOptimWrapper(optimizer=torch.optim.SGD(ref.parameters(), lr=0.0), clip_parts=dict(parts=[["kp", 3]]))

"""Training losses (thkit.losses): numeric checks against plain reference implementations written here."""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thkit.errors import CheckpointError, RecipeError
from thkit.layers import make_coordinate_grid
from thkit.losses.bundle import LossBundle, build_loss_bundle
from thkit.losses.equivariance import EquivarianceLoss, RandomTPSTransform
from thkit.losses.gan import HingeGANLoss, LSGANLoss, adaptive_gan_weight
from thkit.losses.keypoint import KeypointDistanceLoss
from thkit.losses.perceptual import VGG19_URL, MissingWeightsError, PerceptualPyramidLoss, VGG19Features
from thkit.losses.pixel import L1Loss
from thkit.losses.smac import CodebookLoss, FlowReconstructionLoss, LowResolutionLoss
from thkit.losses.tpsmm import BackgroundCycleLoss, WarpLoss

VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)


# ------------------------------------------------------------------------------------------------------------
# reference helpers (plain, independent of thkit)
# ------------------------------------------------------------------------------------------------------------
def ref_blur_subsample(x: torch.Tensor, scale: float) -> torch.Tensor:
    """FOMM's anti-aliased downsampling, written out: Gaussian blur (sigma = (1/s - 1)/2), then [::1/s]."""
    if scale == 1:
        return x
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    c = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(c**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    k = (k / k.sum()).expand(x.shape[1], 1, size, size)
    ka = size // 2
    kb = ka - 1 if size % 2 == 0 else ka
    out = F.conv2d(F.pad(x, (ka, kb, ka, kb)), k, groups=x.shape[1])
    step = int(1 / scale)
    return out[:, :, ::step, ::step]


def torchvision_vgg19_features(seed: int = 0) -> nn.Sequential:
    """torchvision's vgg19 ``features`` up to relu5_1 (what the official Vgg19 slices), randomly initialised."""
    from torchvision.models import vgg

    torch.manual_seed(seed)
    cfg = vgg.cfgs["E"]
    feats = vgg.make_layers(cfg[: cfg.index("M", 12) + 2])  # ..., 512 x 4, 'M', 512: indices 0..29
    for m in feats:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=math.sqrt(2 / (9 * m.out_channels)))
            nn.init.normal_(m.bias, std=0.1)
    return feats.eval()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision-format vgg19 state dict file ('features.N.*', plus a classifier key that must be ignored)."""
    feats = torchvision_vgg19_features()
    assert len(feats) == 30
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-test.pth"
    torch.save(sd, path)
    return path, feats


def centroid_detector(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Equivariant by construction: the intensity centroid of each channel, identity Jacobians."""
    b, c, h, w = image.shape
    grid = make_coordinate_grid(h, w, dtype=image.dtype)
    mass = image.flatten(2)
    value = (mass.unsqueeze(-1) * grid.view(1, 1, -1, 2)).sum(2) / mass.sum(-1, keepdim=True)
    return {"value": value, "jacobian": torch.eye(2).expand(b, c, 2, 2).clone()}


def blob_images(batch: int = 2, size: int = 48) -> torch.Tensor:
    """Three Gaussian blobs (one per channel), well inside the frame."""
    grid = make_coordinate_grid(size, size)
    centres = torch.tensor([[-0.3, -0.2], [0.25, 0.1], [0.0, 0.35]])
    img = torch.stack([torch.exp(-((grid - c) ** 2).sum(-1) / (2 * 0.08**2)) for c in centres])
    return img.unsqueeze(0).repeat(batch, 1, 1, 1)


def official_fomm_warp(coords, theta, params, points=5, kernel="fomm"):
    """The official random transform's warp_coordinates (FOMM Transform / TPSMM TPS 'random'), re-typed."""
    cp = make_coordinate_grid(points, points).view(1, 1, -1, 2)
    th = theta.unsqueeze(1)
    out = (th[:, :, :, :2] @ coords.unsqueeze(-1) + th[:, :, :, 2:]).squeeze(-1)
    d = coords.view(coords.shape[0], -1, 1, 2) - cp
    if kernel == "fomm":
        r = d.abs().sum(-1)
        u = r**2 * torch.log(r + 1e-6)
    else:
        r2 = (d**2).sum(-1)
        u = r2 * torch.log(r2 + 1e-9)
    return out + (u * params.view(params.shape[0], 1, -1)).sum(2).view(theta.shape[0], coords.shape[1], 1)


# ------------------------------------------------------------------------------------------------------------
# perceptual
# ------------------------------------------------------------------------------------------------------------
def test_perceptual_equals_manual_vgg_pyramid(vgg_file):
    path, feats = vgg_file
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    loss = PerceptualPyramidLoss(layer_weights=weights, scales=[1, 0.5], vgg_weights=str(path))
    assert loss.vgg.pretrained
    torch.manual_seed(1)
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    slices = [feats[0:2], feats[2:7], feats[7:12], feats[12:21], feats[21:30]]

    def vgg(x):
        out, h = [], (x - mean) / std
        for s in slices:
            h = s(h)
            out.append(h)
        return out

    expected = 0.0
    with torch.no_grad():
        for scale in (1, 0.5):
            fp, ft = vgg(ref_blur_subsample(pred, scale)), vgg(ref_blur_subsample(target, scale))
            for w, a, b in zip(weights, fp, ft):
                expected += w * (a - b).abs().mean()
        got = loss(pred, target)
    torch.testing.assert_close(got, torch.as_tensor(expected), rtol=1e-5, atol=1e-6)
    assert float(got) > 0


def _seeded_perceptual(**kw):
    torch.manual_seed(11)  # the same random VGG every time (allowed: THKIT_TESTING=1)
    return PerceptualPyramidLoss(**kw)


def test_perceptual_input_range_and_official_smac_quirk():
    kw = dict(layer_weights=[1.0, 1.0, 1.0], scales=[1, 0.5])
    unit = _seeded_perceptual(input_range=(0, 1), **kw)
    sym = _seeded_perceptual(input_range=(-1, 1), **kw)
    quirk = _seeded_perceptual(input_range=(-1, 1), official_smac_range_quirk=True, **kw)
    torch.manual_seed(2)
    x01, y01 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    x11, y11 = 2 * x01 - 1, 2 * y01 - 1
    with torch.no_grad():
        for fa, fb in zip(unit.features(x01), sym.features(x11)):
            for a, b in zip(fa, fb):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(unit(x01, y01), sym(x11, y11), rtol=1e-5, atol=1e-6)
        # the quirk feeds [-1, 1] straight into the ImageNet normalisation: what a (0, 1) loss does on raw x11
        torch.testing.assert_close(quirk(x11, y11), unit(x11, y11), rtol=1e-6, atol=1e-7)
        assert not torch.allclose(quirk(x11, y11), sym(x11, y11))


def test_perceptual_gradient_reaches_prediction_only(vgg_file):
    path, _ = vgg_file
    loss = PerceptualPyramidLoss(layer_weights=[1, 1, 0, 0, 0], scales=[1, 0.5], vgg_weights=str(path))
    assert loss.vgg.num_slices == 2  # trailing zero weights skip the deeper slices
    assert list(loss.parameters()) == [] and loss.state_dict() == {}  # VGG is not part of checkpoints
    pred = torch.rand(1, 3, 16, 16, requires_grad=True)
    target = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None  # the target's features are detached (official)
    # loading a state dict that lacks (or carries) VGG weights is fine
    loss.load_state_dict({}, strict=True)


def test_perceptual_missing_file_names_the_published_weights(tmp_path):
    missing = tmp_path / "vgg19-dcbb9e9d.pth"
    with pytest.raises(MissingWeightsError) as e:
        PerceptualPyramidLoss(vgg_weights=str(missing))
    msg = str(e.value)
    assert str(missing) in msg and VGG19_URL in msg and "IMAGENET1K_V1" in msg and "torch.save" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_perceptual_rejects_a_file_that_is_not_vgg19(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(CheckpointError, match="features.0.bias"):
        PerceptualPyramidLoss(vgg_weights=str(bad))
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, bad)
    with pytest.raises(CheckpointError, match=r"features.0.weight should be a tensor of shape \(64, 3, 3, 3\)"):
        PerceptualPyramidLoss(vgg_weights=str(bad), layer_weights=[1])


def test_vgg_features_are_torchvisions_layers_with_its_keys(vgg_file):
    import torchvision

    path, feats = vgg_file
    net = VGG19Features(str(path), num_slices=3)
    want = torchvision.models.vgg19(weights=None).features[:12]
    assert [repr(m) for m in net.features] == [repr(m) for m in want]
    # torchvision's state-dict keys name the (non-persistent) buffers: 'features.<i>.weight'
    buffers = dict(net.named_buffers())
    assert sorted(buffers) == sorted(f"features.{k}" for k in want.state_dict())
    for i in (0, 5, 10):
        assert torch.equal(buffers[f"features.{i}.weight"], feats[i].weight)
    assert list(net.parameters()) == [] and net.state_dict() == {}


def test_random_vgg_warns_loudly_outside_tests(monkeypatch, caplog):
    monkeypatch.delenv("THKIT_TESTING", raising=False)
    monkeypatch.delenv("THKIT_VGG19_WEIGHTS", raising=False)
    with caplog.at_level(logging.WARNING, logger="thkit.losses.perceptual"):
        with pytest.warns(UserWarning, match="PERCEPTUAL LOSS IS MEANINGLESS"):
            VGG19Features(None, num_slices=1)
    assert any("MEANINGLESS" in r.getMessage() for r in caplog.records)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VGG19Features(None, allow_random=True, num_slices=1)  # asked for on purpose: no warning
        monkeypatch.setenv("THKIT_TESTING", "1")
        VGG19Features(None, num_slices=1)


def test_perceptual_errors_on_too_small_images():
    loss = PerceptualPyramidLoss(layer_weights=[1] * 5, scales=[1, 0.25])
    with pytest.raises(ValueError, match="at pyramid scale 0.25"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("mode", ["slice", "nearest"])
@pytest.mark.parametrize("weights", [[10.0] * 5, [10.0], [1.0, 1.0, 0.0, 0.0, 0.0]])
@pytest.mark.parametrize("size", [24, 40, 64])
def test_scales_that_fit_are_exactly_those_the_loss_accepts(size, weights, mode):
    from thkit.losses.perceptual import scales_that_fit

    pyramid = [1.0, 0.5, 0.25, 0.125]
    fit = scales_that_fit(size, pyramid, weights, mode)
    x = torch.rand(1, 3, size, size)
    for s in pyramid:
        loss = PerceptualPyramidLoss(layer_weights=weights, scales=[s], pyramid_mode=mode, allow_random=True)
        if s in fit:
            loss(x, x)
        else:
            with pytest.raises(ValueError, match=f"at pyramid scale {s}"):
                loss(x, x)
    assert scales_that_fit(64, pyramid, [10.0] * 5) == [1.0, 0.5, 0.25]  # 8 px < 16 px for relu5_1
    assert scales_that_fit(64, pyramid, [10.0]) == pyramid  # relu1_1 has no pooling


# ------------------------------------------------------------------------------------------------------------
# equivariance
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["fomm", "tpsmm"])
def test_random_transform_matches_the_official_draws_and_warp(kernel):
    torch.manual_seed(5)
    ours = RandomTPSTransform.sample(3, 0.05, 0.005, 5, tps_kernel=kernel)
    torch.manual_seed(5)
    theta = torch.normal(mean=0, std=0.05 * torch.ones([3, 2, 3])) + torch.eye(2, 3).view(1, 2, 3)
    params = torch.normal(mean=0, std=0.005 * torch.ones([3, 1, 25]))
    assert torch.equal(ours.theta, theta) and torch.equal(ours.control_params, params.view(3, 25))
    pts = torch.rand(3, 7, 2) * 2 - 1
    torch.testing.assert_close(ours.warp_points(pts), official_fomm_warp(pts, theta, params, 5, kernel),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel", ["fomm", "tpsmm"])
def test_closed_form_jacobian_equals_autograd(kernel):
    torch.manual_seed(6)
    t = RandomTPSTransform.sample(2, 0.2, 0.1, 5, tps_kernel=kernel, dtype=torch.float64)
    pts = (torch.rand(2, 9, 2, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    # the official way: gradients of the summed output coordinates w.r.t. the points
    new = t.warp_points(pts)
    gx = torch.autograd.grad(new[..., 0].sum(), pts, create_graph=True)[0]
    gy = torch.autograd.grad(new[..., 1].sum(), pts, create_graph=True)[0]
    expected = torch.stack([gx, gy], dim=-2)
    torch.testing.assert_close(t.jacobian(pts), expected, rtol=1e-9, atol=1e-10)


def test_equivariance_is_zero_for_identity_and_small_for_an_equivariant_detector():
    img = blob_images()
    loss = EquivarianceLoss(value_weight=10, jacobian_weight=10)
    kp = centroid_detector(img)
    out = loss(img, kp, centroid_detector, transform=RandomTPSTransform.identity(2))
    assert set(out) == {"value", "jacobian"}
    assert float(out["value"]) < 1e-5 and float(out["jacobian"]) < 1e-6

    theta = torch.tensor([[[1.05, 0.03, 0.06], [-0.02, 0.97, -0.05]]]).repeat(2, 1, 1)
    affine = RandomTPSTransform(theta)
    good = EquivarianceLoss(value_weight=1, jacobian_weight=0)(img, kp, centroid_detector, transform=affine)
    centres = torch.tensor([[-0.3, -0.2], [0.25, 0.1], [0.0, 0.35]])
    fixed = lambda x: {"value": centres.expand(x.shape[0], 3, 2)}  # noqa: E731  (ignores the image)
    bad = EquivarianceLoss(value_weight=1, jacobian_weight=0)(img, kp, fixed, transform=affine)
    assert set(good) == {"value"}
    assert float(good["value"]) < 2e-3 < 0.02 < float(bad["value"])


def test_equivariance_jacobian_term_matches_the_official_formula():
    torch.manual_seed(7)
    img = torch.rand(2, 3, 24, 24)
    jac_map = torch.eye(2) + 0.1 * torch.randn(3, 2, 2)

    def detector(x):
        kp = centroid_detector(x)
        kp["jacobian"] = jac_map * (1 + x.mean(dim=(2, 3)))[..., None, None]
        return kp

    kp_d = detector(img)
    t = RandomTPSTransform.sample(2, 0.05, 0.005, 5)
    loss = EquivarianceLoss(weight=2.0, value_weight=3.0, jacobian_weight=5.0)
    out = loss(img, kp_d, detector, transform=t)
    # reference: official GeneratorFullModel equivariance block
    kp_t = detector(t.warp_image(img))
    pts = kp_t["value"].detach().requires_grad_(True)
    new = t.warp_points(pts)
    gx = torch.autograd.grad(new[..., 0].sum(), pts, retain_graph=True)[0]
    gy = torch.autograd.grad(new[..., 1].sum(), pts)[0]
    jt = torch.cat([gx.unsqueeze(-2), gy.unsqueeze(-2)], dim=-2) @ kp_t["jacobian"]
    value = torch.inverse(kp_d["jacobian"]) @ jt
    exp_jac = 2.0 * 5.0 * (torch.eye(2).view(1, 1, 2, 2) - value).abs().mean()
    exp_val = 2.0 * 3.0 * (kp_d["value"] - t.warp_points(kp_t["value"])).abs().mean()
    torch.testing.assert_close(out["jacobian"], exp_jac, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["value"], exp_val, rtol=1e-5, atol=1e-7)


def test_equivariance_needs_jacobians_unless_disabled_and_trains_the_detector():
    img = blob_images(1, 32)
    values_only = lambda x: {"value": centroid_detector(x)["value"]}  # noqa: E731
    with pytest.raises(ValueError, match="jacobian_weight=0"):
        EquivarianceLoss()(img, values_only(img), values_only)

    class Learnable(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return {"value": centroid_detector(x)["value"] * 1.1 + self.shift}

    det = Learnable()
    torch.manual_seed(0)
    out = EquivarianceLoss(value_weight=10, jacobian_weight=0, tps_kernel="tpsmm")(img, det(img), det)
    out["value"].backward()
    assert det.shift.grad is not None and det.shift.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------------
# keypoint distance
# ------------------------------------------------------------------------------------------------------------
def official_kp_distance(kp_driving, kp_source, weight=1.0):
    """DaGAN / MCNet / SMAC KPDistanceLoss, re-typed (without its .cuda())."""
    _, k, _ = kp_source["value"].shape
    sk = kp_source["value"].unsqueeze(2) - kp_source["value"].unsqueeze(1)
    dk = kp_driving["value"].unsqueeze(2) - kp_driving["value"].unsqueeze(1)
    eye = torch.eye(k)
    s = (-torch.sign((torch.sqrt((sk * sk).sum(-1) + 1e-8) + eye * 0.2) - 0.2) + 1).mean()
    d = (-torch.sign((torch.sqrt((dk * dk).sum(-1) + 1e-8) + eye * 0.2) - 0.2) + 1).mean()
    return (s + d) * weight


def _close_keypoints():
    return torch.tensor([[[0.0, 0.0], [0.05, 0.02], [0.8, 0.8], [-0.7, 0.6]]])


def test_official_keypoint_distance_has_zero_gradient():
    v = _close_keypoints().requires_grad_(True)
    loss = official_kp_distance({"value": v}, {"value": v})
    assert float(loss.detach()) > 0  # it does see the close pair ...
    loss.backward()
    assert v.grad is not None and torch.count_nonzero(v.grad) == 0  # ... but cannot move it


def test_keypoint_distance_has_a_real_gradient_that_separates_close_points():
    v = _close_keypoints().requires_grad_(True)
    loss = KeypointDistanceLoss(weight=1.0, margin=0.2)
    value = loss({"value": v})
    value.backward()
    assert float(value.detach()) > 0 and v.grad[0, :2].abs().sum() > 0
    assert torch.count_nonzero(v.grad[0, 2:]) == 0  # well separated points are left alone
    opt = torch.optim.SGD([v], lr=0.05)
    d0 = float((v[0, 0] - v[0, 1]).detach().norm())
    for _ in range(20):
        opt.zero_grad()
        loss({"value": v}).backward()
        opt.step()
    assert float((v[0, 0] - v[0, 1]).detach().norm()) > d0 + 0.05
    far = torch.tensor([[[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]]])
    assert float(loss({"value": far}, {"value": far})) == 0.0
    same = torch.zeros(2, 4, 2)
    torch.testing.assert_close(loss({"value": same}, {"value": same}), torch.tensor(2.0), rtol=1e-3, atol=0)


# ------------------------------------------------------------------------------------------------------------
# GAN
# ------------------------------------------------------------------------------------------------------------
def _disc_out(pred_vals, feats):
    return {"prediction_map": {s: torch.full((2, 1, 3, 3), v) for s, v in pred_vals.items()},
            "feature_maps": {s: [torch.full((2, 4, 3, 3), f) for f in fs] for s, fs in feats.items()}}


def test_lsgan_values_on_known_inputs():
    fake = _disc_out({"1": 0.25, "0.5": -0.5}, {"1": [1.0, 2.0], "0.5": [0.0, 1.0]})
    real = _disc_out({"1": 0.75, "0.5": 1.5}, {"1": [1.5, 1.0], "0.5": [0.5, 3.0]})
    loss = LSGANLoss(weight=2.0, discriminator_weight=3.0, feature_matching=[10.0, 1.0])
    out = loss(fake, real)
    torch.testing.assert_close(out["gan"], torch.tensor(2.0 * ((1 - 0.25) ** 2 + (1 + 0.5) ** 2)))
    torch.testing.assert_close(out["feature_matching"], torch.tensor(10 * 0.5 + 1 * 1.0 + 10 * 0.5 + 1 * 2.0))
    d = loss.discriminator_loss(real, fake)
    torch.testing.assert_close(d["gan"], torch.tensor(3.0 * ((0.25**2 + 0.25**2) + (0.5**2 + 0.5**2))))
    assert float(LSGANLoss(start_iter=10, feature_matching=[])(fake, iteration=3)["gan"]) == 0.0
    with pytest.raises(ValueError, match="2 feature maps"):
        LSGANLoss(feature_matching=[1, 1, 1, 1])(fake, real)


def test_lsgan_on_the_multiscale_discriminator():
    from thkit.models.discriminator import MultiScaleDiscriminator

    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(scales=[1, 0.5], block_expansion=4, max_features=16, num_blocks=4)
    pred = torch.rand(2, 3, 128, 128, requires_grad=True)
    real = torch.rand(2, 3, 128, 128)
    out = LSGANLoss(weight=1, feature_matching=[10, 10, 10, 10])(disc(pred), disc(real))
    (out["gan"] + out["feature_matching"]).backward()
    assert pred.grad.abs().sum() > 0
    dl = LSGANLoss().discriminator_loss(disc(real), disc(pred.detach()))
    preds_r = disc(real)["prediction_map"]
    preds_f = disc(pred.detach())["prediction_map"]
    manual = sum(((1 - preds_r[s]) ** 2 + preds_f[s] ** 2).mean() for s in ("1", "0.5"))
    torch.testing.assert_close(dl["gan"], manual)


def test_hinge_values_on_known_inputs():
    real = torch.tensor([0.5, 2.0, -1.0]).view(1, 1, 1, 3)
    fake = torch.tensor([-2.0, 0.0, 1.0]).view(1, 1, 1, 3)
    loss = HingeGANLoss(weight=0.8, adaptive=False)
    d = loss.discriminator_loss(real, fake)
    torch.testing.assert_close(d["real"], torch.tensor((0.5 + 0 + 2.0) / 3))
    torch.testing.assert_close(d["fake"], torch.tensor((0 + 1.0 + 2.0) / 3))
    g = loss(fake)
    torch.testing.assert_close(g["gan"], torch.tensor(0.8 * (1.0 / 3)))
    assert float(HingeGANLoss(start_iter=5001, adaptive=False)(fake, iteration=5000)["gan"]) == 0.0


def _tiny_generator():
    torch.manual_seed(3)
    body = nn.Conv2d(3, 8, 3, padding=1)
    last = nn.Conv2d(8, 3, 3, padding=1)
    disc = nn.Conv2d(3, 1, 4, stride=2)
    return body, last, disc


def test_adaptive_weight_equals_the_gradient_norm_ratio():
    body, last, disc = _tiny_generator()
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out = last(torch.relu(body(x)))
    rec = (out - y).abs().mean()
    gan = -disc(out).mean()
    g_rec = torch.autograd.grad(rec, last.weight, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, last.weight, retain_graph=True)[0]
    ratio = g_rec.norm() / (g_gan.norm() + 1e-4)
    got = adaptive_gan_weight(rec, gan, last.weight)
    torch.testing.assert_close(got, ratio)
    assert not got.requires_grad
    torch.testing.assert_close(adaptive_gan_weight(rec, gan, last.weight, max_weight=0.5 * float(ratio)),
                               0.5 * ratio)
    hinge = HingeGANLoss(weight=0.8, max_adaptive_weight=1e4)(disc(out), rec_loss=rec, last_layer=last.weight)
    torch.testing.assert_close(hinge["adaptive_weight"], ratio)
    torch.testing.assert_close(hinge["gan"], 0.8 * ratio * gan)
    with pytest.raises(ValueError, match="last_layer"):
        HingeGANLoss()(disc(out), rec_loss=rec)
    with torch.no_grad():  # evaluation: no gradients to compare, VQGAN's 0
        assert float(HingeGANLoss()(disc(out.detach()))["adaptive_weight"]) == 0.0


# ------------------------------------------------------------------------------------------------------------
# SMAC / TPSMM losses
# ------------------------------------------------------------------------------------------------------------
def test_codebook_loss_sums_the_vq_outputs_of_every_scale():
    from thkit.codebook.vq import VectorQuantizer

    torch.manual_seed(0)
    vq_m, vq_a = VectorQuantizer(16, 4), VectorQuantizer(16, 8)
    motion = [vq_m(torch.randn(2, 4, 3, 3), codes=n) for n in (4, 8)]
    appearance = {"32": vq_a(torch.randn(2, 8, 2, 2)), "64": vq_a(torch.randn(2, 8, 2, 2))}
    out = CodebookLoss(weight=2.0, motion_weight=1.0, appearance_weight=0.5)(motion, appearance)
    torch.testing.assert_close(out["motion"], 2.0 * (motion[0]["loss"] + motion[1]["loss"]))
    torch.testing.assert_close(out["appearance"], 1.0 * (appearance["32"]["loss"] + appearance["64"]["loss"]))
    torch.testing.assert_close(out["motion_commitment"],
                               (motion[0]["commitment_loss"] + motion[1]["commitment_loss"]).detach())
    scalars = CodebookLoss()(motion=[torch.tensor(1.5), torch.tensor(0.5)])
    assert set(scalars) == {"motion"} and float(scalars["motion"]) == 2.0
    with pytest.raises(ValueError, match="motion and/or"):
        CodebookLoss()()


def test_flow_reconstruction_in_official_units():
    torch.manual_seed(0)
    h = w = 8
    grid = make_coordinate_grid(h, w)
    flows = [(grid + 0.1 * torch.randn(2, h, w, 2)).requires_grad_(True) for _ in range(3)]  # last one unused
    pix = (h - 1) / 2
    exact = [(f.detach() - grid) * pix for f in flows[:2]]
    loss = FlowReconstructionLoss(weight=32.0)
    assert float(loss(exact, flows)) < 1e-5
    off = [(e + 0.7).requires_grad_(True) for e in exact]  # 0.7 px off everywhere
    out = loss(off, flows)
    torch.testing.assert_close(out, torch.tensor(32.0 * 2 * 0.7 / pix), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(FlowReconstructionLoss(weight=1.0, loss_units="pixel")(off, flows),
                               torch.tensor(2 * 0.7), rtol=1e-5, atol=1e-6)
    out.backward()
    assert all(f.grad is None for f in flows)  # the target flow is detached (official)
    assert all(o.grad is not None for o in off)
    with pytest.raises(ValueError, match="starting flows"):
        loss(exact, flows[:1])


def test_low_resolution_loss_is_pixel_plus_perceptual():
    percep = _seeded_perceptual(layer_weights=[1.0, 1.0], scales=[1, 0.5], input_range=(-1, 1))
    low = LowResolutionLoss(weight=0.5, perceptual=percep)
    torch.manual_seed(0)
    lr, gt = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    out = low([lr], gt)
    torch.testing.assert_close(out["pixel"], 0.5 * (lr - gt).abs().mean())
    torch.testing.assert_close(out["perceptual"], 0.5 * percep(lr, gt))


def test_warp_loss_matches_manual_and_encoder_path():
    from thkit.encode.tpsmm import TPSMMEncoder

    torch.manual_seed(0)
    enc = TPSMMEncoder(block_expansion=4, max_features=16, num_down_blocks=2)
    driving = torch.rand(2, 3, 16, 16)
    occ = [torch.rand(2, 1, s, s) for s in (4, 8, 16)]  # coarse to fine
    target = enc.occluded_features(driving, occ)
    warped = [(t + 0.1 * torch.randn_like(t)).requires_grad_(True) for t in target]
    manual = 10 * sum((t - w).abs().mean() for t, w in zip(target, warped))
    loss = WarpLoss(weight=10)
    torch.testing.assert_close(loss(warped, target), manual)
    via_encoder = loss(warped, encoder=enc, driving=driving, occlusion_map=occ)
    torch.testing.assert_close(via_encoder, manual)
    via_encoder.backward()
    assert all(w.grad is not None for w in warped)
    with pytest.raises(ValueError, match="warped feature maps"):
        loss(warped[:2], target)


def test_background_cycle_loss():
    a = torch.tensor([[1.1, 0.1, 0.05], [0.0, 0.9, -0.1], [0, 0, 1]]).expand(2, 3, 3)
    loss = BackgroundCycleLoss(weight=10)
    assert float(loss(a, bg_param_reverse=torch.linalg.inv(a))) < 1e-5
    b = torch.eye(3).expand(2, 3, 3)
    torch.testing.assert_close(loss(a, bg_param_reverse=b), 10 * (torch.eye(3) - a).abs().mean())
    swapped = loss(a, source=torch.zeros(2, 3, 4, 4), driving=torch.ones(2, 3, 4, 4),
                   bg_predictor=lambda d, s: torch.linalg.inv(a) if d.mean() > s.mean() else a)
    assert float(swapped) < 1e-5  # the predictor was called as (driving, source)
    assert float(loss(None, source=torch.zeros(1, 3, 4, 4))) == 0.0


# ------------------------------------------------------------------------------------------------------------
# bundle
# ------------------------------------------------------------------------------------------------------------
def test_bundle_from_recipe_names_weights_and_shares():
    from mmengine.config import ConfigDict

    cfg = ConfigDict(
        pixel=dict(type="L1Loss", weight=1.0),
        perceptual=dict(type="PerceptualPyramidLoss", layer_weights=[1.0, 1.0], scales=[1, 0.5]),
        low_res=dict(type="LowResolutionLoss", weight=0.5, perceptual="@perceptual"),
        equivariance=dict(type="EquivarianceLoss", value_weight=1.0, jacobian_weight=1.0),
        kp_distance=dict(type="KeypointDistanceLoss", weight=1.0, inputs=dict(kp_driving="kp_d")),
        adversarial=dict(type="HingeGANLoss", weight=0.8, max_adaptive_weight=1.0, rec_terms=["pixel", "perceptual"]),
        disabled=dict(type="PerceptualPyramidLoss", weight=0),
        nothing=None,
    )
    bundle = build_loss_bundle(cfg)
    assert isinstance(bundle, LossBundle)
    assert bundle.names() == ["pixel", "perceptual", "low_res", "equivariance", "kp_distance", "adversarial"]
    assert bundle.disabled == ["disabled", "nothing"]
    assert bundle["low_res"].perceptual is bundle["perceptual"]  # one VGG

    body, last, disc = _tiny_generator()
    torch.manual_seed(4)
    src, drv = torch.rand(2, 3, 32, 32), blob_images(2, 32)
    pred = last(torch.relu(body(src)))
    kp = centroid_detector(drv)
    ns = dict(prediction=pred, driving=drv, prediction_lr=[pred], kp_d=kp, kp_driving=kp,
              keypoint_detector=centroid_detector, disc_fake=disc(pred), last_layer=last.weight)
    stats: dict = {}
    values = bundle(ns, stats=stats)
    assert list(values) == ["pixel", "perceptual", "low_res_pixel", "low_res_perceptual", "equivariance_value",
                            "equivariance_jacobian", "kp_distance", "adversarial_gan"]
    assert list(stats) == ["adversarial_adaptive_weight"]
    torch.testing.assert_close(values["pixel"], (pred - drv).abs().mean())
    lam = adaptive_gan_weight(values["pixel"] + values["perceptual"], -disc(pred).mean(), last.weight, 1.0)
    torch.testing.assert_close(stats["adversarial_adaptive_weight"], lam)
    torch.testing.assert_close(values["adversarial_gan"], 0.8 * lam * -disc(pred).mean())
    total = LossBundle.total(values)
    torch.testing.assert_close(total, sum(values.values()))
    total.backward()
    assert last.weight.grad is not None

    d = bundle.discriminator(dict(disc_real=disc(drv), disc_fake=disc(pred.detach())))
    assert list(d) == ["adversarial_real", "adversarial_fake"]


def test_bundle_errors_name_the_recipe_path_and_the_missing_input():
    with pytest.raises(RecipeError, match=r"losses\.pix\.inputs\.prediction"):
        build_loss_bundle(dict(pix=dict(type="L1Loss", inputs=dict(prediction="x"))))
    with pytest.raises(RecipeError, match=r"losses\.pix\.type"):
        build_loss_bundle(dict(pix=dict(type="L1Los")))
    with pytest.raises(RecipeError, match=r"losses\.low"):
        build_loss_bundle(dict(low=dict(type="LowResolutionLoss", perceptual="@perceptual")))
    bundle = build_loss_bundle(dict(pix=dict(type="L1Loss", inputs=dict(target="gt"))))
    with pytest.raises(KeyError, match=r"'target' from the namespace key 'gt'"):
        bundle(dict(prediction=torch.zeros(1), driving=torch.zeros(1)))
    out = bundle(dict(prediction=torch.ones(1, 3, 2, 2), gt=torch.zeros(1, 3, 2, 2)))
    assert float(out["pix"]) == 1.0
    assert float(L1Loss(weight=3)(torch.ones(2), torch.zeros(2))) == 3.0

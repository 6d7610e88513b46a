"""Evaluation metrics: formulas vs plain references, streaming aggregation, weights-file handling, network
metrics built from temporary local weights files (checked against the reference packages where they are
installed), and offline face backends on a real face (scikit-image's astronaut, shipped in its wheel)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

import thkit.metrics  # noqa: F401  (registers everything)
from thkit.metrics.base import Metric
from thkit.metrics.report import MetricCollection, print_report, results_table, write_json
from thkit.metrics.weights import WEIGHTS_ENV, MissingWeightsError
from thkit.registry import METRICS

ALL = ("L1", "PSNR", "SSIM", "LPIPS", "FID", "CSIM", "AKD", "AED", "ARD")


@pytest.fixture(autouse=True)
def _no_weights_dir(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


def _pair(b=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)
    y = (x + 0.1 * torch.randn(b, 3, h, w, generator=g)).clamp(0, 1)
    return x, y


def _face(size=128):
    """The astronaut (Eileen Collins, NASA, public domain; in scikit-image's wheel), cropped FOMM-style."""
    skimage = pytest.importorskip("skimage")
    from skimage import data, transform

    img = data.astronaut()[24:224, 125:325]
    img = transform.resize(img, (size, size), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1).float()[None], skimage


def test_all_metrics_registered_in_thkit_scope_under_mmengine():
    from mmengine.registry import METRICS as MM_METRICS

    assert METRICS.parent is MM_METRICS
    for name in ALL:
        cls = METRICS.get(name)
        assert cls is not None and issubclass(cls, Metric), name
        assert cls.metric_name == name


# ------------------------------------------------------------------------------------------ pure math
def test_l1_matches_plain_formula():
    x, y = _pair()
    m = METRICS.build(dict(type="L1"))
    m.update(x, y)
    ref = np.abs(x.numpy() - y.numpy()).mean(axis=(1, 2, 3))
    r = m.compute()
    assert r["frames"] == 3 and r["skipped"] == 0
    assert r["value"] == pytest.approx(ref.mean(), rel=1e-6)


def test_psnr_of_known_mse_and_per_frame_averaging():
    t = torch.full((2, 3, 16, 16), 0.5)
    p = t.clone()
    p[0] += 0.1  # MSE 0.01 -> 20 dB
    p[1, :, :, :8] += 0.2  # MSE 0.02 -> 16.99 dB
    m = METRICS.build(dict(type="PSNR"))
    m.update(p, t)
    per_frame = [10 * math.log10(1 / 0.01), 10 * math.log10(1 / 0.02)]
    assert m.compute()["value"] == pytest.approx(np.mean(per_frame), abs=1e-4)
    pooled = 10 * math.log10(1 / 0.015)
    assert abs(m.compute()["value"] - pooled) > 0.1  # not the pooled-MSE PSNR


def test_ssim_identity_and_reference_implementation():
    from skimage.metrics import structural_similarity

    x, y = _pair(b=2, h=48, w=40)
    m = METRICS.build(dict(type="SSIM"))
    m.update(x, x)
    assert m.compute()["value"] == pytest.approx(1.0, abs=1e-6)
    m.reset()
    m.update(x, y)
    ref = [structural_similarity(a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy(),
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                 channel_axis=2) for a, b in zip(x, y)]
    assert m.compute()["value"] == pytest.approx(float(np.mean(ref)), abs=1e-5)


def test_input_range_uint8_quantize_and_bad_inputs():
    x, y = _pair(b=2)
    base = METRICS.build(dict(type="L1"))
    base.update(x, y)
    sym = METRICS.build(dict(type="L1", input_range=(-1, 1)))
    sym.update(x * 2 - 1, y * 2 - 1)
    assert sym.compute()["value"] == pytest.approx(base.compute()["value"], rel=1e-5)
    q = METRICS.build(dict(type="L1", quantize="round"))
    q.update(x, y)
    u8 = METRICS.build(dict(type="L1"))
    u8.update((x * 255).round().to(torch.uint8), (y * 255).round().to(torch.uint8))
    assert q.compute()["value"] == pytest.approx(u8.compute()["value"], rel=1e-6)
    with pytest.raises(ValueError, match="input_range"):
        base.update(x * 2 - 1, y)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        base.update(x[:, :1], y[:, :1])
    with pytest.raises(ValueError, match="needs target"):
        base.update(x)


def test_aggregation_over_batches_equals_one_shot_and_per_video_means():
    x, y = _pair(b=6, seed=3)
    for name in ("L1", "PSNR", "SSIM"):
        one = METRICS.build(dict(type=name))
        one.update(x, y)
        many = METRICS.build(dict(type=name))
        for i in range(0, 6, 2):
            many.update(x[i:i + 2], y[i:i + 2])
        assert many.compute()["value"] == pytest.approx(one.compute()["value"], rel=1e-9), name
    m = METRICS.build(dict(type="L1", aggregate="video"))
    m.update(x[:4], y[:4], video="a")
    m.update(x[4:], y[4:], video=["b", "b"])
    per = (x - y).abs().mean(dim=(1, 2, 3)).double().numpy()
    r = m.compute()
    assert r["videos"] == 2 and r["frames"] == 6
    assert r["mean"] == pytest.approx(per.mean(), rel=1e-6)
    assert r["value"] == pytest.approx((per[:4].mean() + per[4:].mean()) / 2, rel=1e-6)


def test_mmengine_process_and_evaluate():
    x, y = _pair(b=2)
    m = METRICS.build(dict(type="PSNR"))
    m.process({}, [dict(prediction=x[0], driving=y[0]), dict(prediction=x[1], driving=y[1])])
    out = m.evaluate(2)
    ref = METRICS.build(dict(type="PSNR"))
    ref.update(x, y)
    assert out["PSNR/value"] == pytest.approx(ref.compute()["value"])
    assert m.results == []


# -------------------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("cfg, filename, arg", [
    (dict(type="LPIPS", net="vgg"), "vgg16-397923af.pth", "backbone_weights"),
    (dict(type="LPIPS", net="alex"), "alexnet-owt-7be5be79.pth", "backbone_weights"),
    (dict(type="FID"), "pt_inception-2015-12-05-6726825d.pth", "weights"),
    (dict(type="AED"), "openface.pth", "weights"),
    (dict(type="CSIM"), "arcface_r100_glint360k_backbone.pth", "weights"),
    (dict(type="AKD", backend="face_alignment"), "s3fd-619a316812.pth", "s3fd_weights"),
    (dict(type="ARD", backend="mediapipe_task"), "face_landmarker_v2_with_blendshapes.task", "task_file"),
])
def test_missing_weights_error_names_file_source_argument_and_env(cfg, filename, arg, tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        METRICS.build(cfg)
    msg = str(e.value)
    assert repr(filename) in msg and f"{arg}=" in msg and WEIGHTS_ENV in msg
    assert "http" in msg and "never downloads" in msg
    with pytest.raises(MissingWeightsError, match="does not exist"):
        METRICS.build({**cfg, arg: str(tmp_path / "nope.pth")})


class _FeaturesOnly(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features


def _lpips_backbone_file(tmp_path, net, monkeypatch):
    lpips = pytest.importorskip("lpips")
    import torchvision

    # lpips builds a full torchvision model and keeps only ``features``: skip VGG-16's 120M-parameter classifier
    monkeypatch.setattr(torchvision.models, "vgg16", lambda *a, **k: _FeaturesOnly(
        torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])))
    ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    sd = {"features." + k.split(".", 1)[1]: v for k, v in ref.net.state_dict().items()}  # slice<i>.<idx>.*
    path = tmp_path / {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}[net]
    torch.save(sd, path)
    return ref, path


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_package_with_same_weights(net, tmp_path, monkeypatch):
    ref, path = _lpips_backbone_file(tmp_path, net, monkeypatch)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))  # found by its exact name in $THKIT_WEIGHTS_DIR
    with pytest.warns(UserWarning, match="not the published"):
        m = METRICS.build(dict(type="LPIPS", net=net))
    assert m.weights_files["lin"].endswith(f"v0.1/{net}.pth")  # the lpips wheel's linear heads
    x, y = _pair(b=2, h=64, w=64)
    m.update(x, y)
    with torch.no_grad():
        want = ref(x, y, normalize=True).flatten()
        want_mrfa = ref(x, y).flatten()
    assert m.compute()["value"] == pytest.approx(float(want.mean()), rel=1e-5)
    mrfa = METRICS.build(dict(type="LPIPS", net=net, feed_range=(0, 1), backbone_weights=path, check_hash=False))
    mrfa.update(x, y)
    assert mrfa.compute()["value"] == pytest.approx(float(want_mrfa.mean()), rel=1e-5)


def test_lpips_backbone_is_torchvisions_features_sliced_after_the_last_tap():
    import torchvision

    from thkit.metrics.lpips_metric import LPIPSNetwork

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None).eval()
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    net = LPIPSNetwork("alex", alex.state_dict(), lin)  # torchvision's full state dict loads key for key
    assert [repr(m) for m in net.features] == [repr(m) for m in alex.features[:12]]
    for k, v in alex.features[:12].state_dict().items():
        assert torch.equal(net.features.state_dict()[k], v)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    h, want = (x - net.shift) / net.scale, []
    with torch.no_grad():
        for i, layer in enumerate(alex.features[:12]):
            h = layer(h)
            if i in (1, 4, 7, 9, 11):
                want.append(h.clone())
        for a, b in zip(net.taps_of(x), want, strict=True):
            assert torch.equal(a, b)


def _random_fid_state(seed=0):
    from thkit.metrics.fid import FIDInceptionV3

    torch.manual_seed(seed)
    sd = FIDInceptionV3().state_dict()
    g = torch.Generator().manual_seed(seed)
    for k, v in sd.items():  # non-trivial BatchNorm statistics
        if k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean"):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1008, 2048) * 0.01, torch.zeros(1008)
    return sd


def test_fid_inception_matches_pytorch_fid_and_loads_from_local_file(tmp_path, monkeypatch):
    import pytorch_fid.inception as pfi

    from thkit.metrics.fid import FIDInceptionV3

    sd = _random_fid_state()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: torch.load(path))
    ref = pfi.InceptionV3([3], resize_input=False).eval()
    x = torch.rand(2, 3, 80, 80)
    with torch.no_grad():
        want = ref(x)[0].flatten(1)
        got = FIDInceptionV3(torch.load(path), input_size=None)(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)

    m = METRICS.build(dict(type="FID", weights=str(path), input_size=80))
    assert not m.paper_exact  # 80 px is not standard FID
    a, b = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    with pytest.warns(UserWarning, match="rank-deficient"):
        m.update(a[:2], b[:2])
        m.update(a[2:], b[2:])
        r = m.compute()
    fa = np.stack([q["feat"] for q in m.results if q["kind"] == "fake"])
    fb = np.stack([q["feat"] for q in m.results if q["kind"] == "real"])
    # plain formula; Tr sqrt(S1 S2) = nuclear norm of the centred, scaled features' cross product
    ca, cb = (fa - fa.mean(0)) / math.sqrt(3), (fb - fb.mean(0)) / math.sqrt(3)
    want_fid = (((fa.mean(0) - fb.mean(0)) ** 2).sum() + np.trace(np.cov(fa, rowvar=False))
                + np.trace(np.cov(fb, rowvar=False)) - 2 * np.linalg.norm(ca @ cb.T, "nuc"))
    assert r["frames"] == 4 and r["reference_frames"] == 4
    assert r["value"] == pytest.approx(want_fid, rel=1e-6, abs=1e-9)


def test_frechet_distance_closed_form_and_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    from thkit.metrics.fid import frechet_distance, frechet_distance_from_features

    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.5, 2, size=5), rng.uniform(0.5, 2, size=5)
    # diagonal covariances: |mu1-mu2|^2 + sum (sqrt v1 - sqrt v2)^2
    closed = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-9)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8)) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = calculate_frechet_distance(a.mean(0), s1, b.mean(0), s2)
    assert frechet_distance(a.mean(0), s1, b.mean(0), s2) == pytest.approx(want, rel=1e-9)
    assert frechet_distance_from_features(a, b) == pytest.approx(want, rel=1e-9)  # N > D: covariance path
    small_a, small_b = a[:5] * 3, b[:6]  # N < D: the nuclear-norm identity, vs sqrtm on the same covariances
    want_small = calculate_frechet_distance(small_a.mean(0), np.cov(small_a, rowvar=False), small_b.mean(0),
                                            np.cov(small_b, rowvar=False))
    assert frechet_distance_from_features(small_a, small_b) == pytest.approx(want_small, rel=1e-6)


def test_aed_openface_layout_pipeline_and_sum_of_squares(tmp_path):
    from skimage.transform import resize

    from thkit.metrics.identity import OpenFaceNet

    torch.manual_seed(0)
    net = OpenFaceNet()
    sd = net.state_dict()
    # keys of OpenFacePytorch's openface.pth (read from its loadOpenFace.py layout)
    for key in ("layer1.weight", "layer2.running_var", "layer14.seq_list.0.4_conv.weight",
                "layer14.seq_list.2.2_conv.weight", "layer14.seq_list.3.1_conv.weight",
                "layer19.seq_list.1.2_conv.weight", "layer21.seq_list.2.2_bn.bias", "layer25.weight"):
        assert key in sd, key
    assert not any(k.startswith(("layer16.seq_list.2.", "layer18.seq_list.2.")) for k in sd)  # bare max pools
    for k in sd:  # without biases the random features depend on the input, not on constant offsets
        if k.endswith("bias"):
            sd[k].zero_()
    old_style = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # pre-0.4 file
    torch.save(old_style, tmp_path / "openface.pth")
    m = METRICS.build(dict(type="AED", weights=str(tmp_path)))
    face, _ = _face(64)
    other = face.flip(3).roll(7, dims=2)
    m.update(torch.cat([face, other]), torch.cat([face, face]))
    r = m.compute()
    assert r["frames"] == 2 and r["paper_exact"]
    # the script's own steps: uint8 RGB -> BGR -> skimage resize 96 -> net -> sum of squared differences
    def emb(t):
        u8 = (t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[..., ::-1]
        small = resize(u8, (96, 96)).astype(np.float32).transpose(2, 0, 1)
        net.load_state_dict(sd)
        with torch.no_grad():
            return net.eval()(torch.from_numpy(small.copy())[None])[0].double()
    want = float(((emb(other) - emb(face)) ** 2).sum())
    assert m.results[0]["score"] == 0.0
    assert want > 1e-5 and m.results[1]["score"] == pytest.approx(want, rel=1e-3)
    cross = METRICS.build(dict(type="AED", weights=str(tmp_path), reference="source"))
    cross.update(other, source=face)
    assert cross.compute()["value"] == pytest.approx(want, rel=1e-4)


def test_csim_arcface_from_local_file(tmp_path):
    from thkit.metrics.identity import IResNet

    torch.manual_seed(0)
    net = IResNet(IResNet.ARCHS["r18"], num_features=64)
    torch.save(net.state_dict(), tmp_path / "arcface_r100_glint360k_backbone.pth")
    os.environ[WEIGHTS_ENV] = str(tmp_path)
    m = METRICS.build(dict(type="CSIM"))
    assert m.arch == "r18" and not m.paper_exact and m.reference == "source"
    x, y = _pair(b=2, h=64, w=64)
    m.update(x, source=x[:1])
    r = m.compute()
    net.load_state_dict(torch.load(tmp_path / "arcface_r100_glint360k_backbone.pth"))
    net.eval()
    with torch.no_grad():
        def e(t):
            t = torch.nn.functional.interpolate(t, size=(112, 112), mode="bilinear", antialias=True)
            return torch.nn.functional.normalize(net((t - 0.5) / 0.5), dim=1)
        want = (e(x) * e(x[:1])).sum(1)
    assert m.results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert r["value"] == pytest.approx(float(want.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="source="):
        m.update(x, y)


def test_akd_face_alignment_backend_loads_local_files_without_download(tmp_path, monkeypatch):
    pytest.importorskip("face_alignment")
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    torch.manual_seed(0)
    fan_sd = FAN(4).state_dict()
    det = s3fd()
    det_sd = det.state_dict()
    for k in det_sd:  # a detector that never fires: background logits win everywhere
        if "mbox_conf" in k and k.endswith("weight"):
            det_sd[k].zero_()
        elif "mbox_conf" in k and k.endswith("bias"):
            det_sd[k].copy_(torch.tensor([10.0] * (len(det_sd[k]) - 1) + [-10.0]))
    torch.save(fan_sd, tmp_path / "2DFAN4-11f355bf06.pth.tar")
    torch.save(det_sd, tmp_path / "s3fd-619a316812.pth")
    hub_before = torch.hub.get_dir()
    m = METRICS.build(dict(type="AKD", backend="face_alignment", s3fd_weights=str(tmp_path),
                           fan_weights=str(tmp_path)))
    assert torch.hub.get_dir() == hub_before
    assert m.paper_exact and m.backend.startswith("face_alignment")
    fa = m.face_backend._fa
    got = fa.face_alignment_net.state_dict()
    assert all(torch.equal(got[k].cpu(), fan_sd[k]) for k in fan_sd)  # our file, not a download
    with torch.no_grad():  # the loaded FAN runs: 68 heatmaps at 64x64 for a 256x256 crop
        heat = fa.face_alignment_net(torch.rand(1, 3, 256, 256))
    assert (heat[-1] if isinstance(heat, list) else heat).shape == (1, 68, 64, 64)
    face, _ = _face(64)
    m.update(face, face)  # the real S3FD runs and finds nothing
    with pytest.warns(UserWarning, match="all 1 frames were skipped"):
        assert m.compute()["skipped_reasons"] == {"no_face_pred": 1}
    # the distance path on 68 points (face_alignment's own heat-map decoding is not re-run here: its numba JIT
    # compilation alone takes tens of seconds): a frame whose landmarks are all shifted by (+3, -1) px
    base = np.random.default_rng(0).uniform(10, 50, size=(68, 2))
    monkeypatch.setattr(fa, "get_landmarks_from_image",
                        lambda img: [base + (np.array([3.0, -1.0]) if img[0, 0, 0] == 255 else 0.0)])
    marked = face.clone()
    marked[:, :, 0, 0] = 1.0
    m.reset()
    m.update(torch.cat([marked, face]), torch.cat([face, face]))
    assert [r["score"] for r in m.results] == [pytest.approx(2.0), 0.0]  # mean(|3|, |-1|) over the coordinates


def test_mediapipe_akd_ard_on_a_real_face():
    pytest.importorskip("mediapipe")
    face, skimage = _face(256)
    from skimage import transform

    img = face[0].permute(1, 2, 0).numpy()
    shifted = face.roll(6, dims=3)
    shifted[..., :6] = face[..., :1]  # pad the left edge instead of wrapping
    rotated = torch.from_numpy(transform.rotate(img, 10, mode="edge")).permute(2, 0, 1).float()[None]
    blank = torch.full_like(face, 0.5)

    akd = METRICS.build(dict(type="AKD", backend="mediapipe", eval_size=256))
    assert not akd.paper_exact and "NOT" in akd.convention
    akd.update(torch.cat([face, shifted, blank]), torch.cat([face, face, face]))
    s = [r["score"] for r in akd.results]
    assert s[0] == 0.0
    assert 2.4 < s[1] < 3.6  # a 6 px shift in x: mean of |dx|=6 and |dy|=0 over the coordinates
    r = akd.compute()
    assert r["skipped"] == 1 and r["skipped_reasons"] == {"no_face_pred": 1} and r["frames"] == 2

    ard = METRICS.build(dict(type="ARD", backend="mediapipe"))
    assert not ard.paper_exact
    ard.update(torch.cat([face, rotated]), torch.cat([face, face]))
    p0 = ard.face_backend.pose((img * 255).round().astype(np.uint8))
    p1 = ard.face_backend.pose((rotated[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert abs(abs(p1[2] - p0[2]) - 10) < 2.0  # in-plane rotation shows up in the z angle
    assert ard.results[0]["score"] == 0.0
    assert ard.results[1]["score"] == pytest.approx(float(np.abs(p1 - p0).mean()), rel=1e-6)


def test_report_table_flags_non_paper_metrics_and_json_is_valid(tmp_path):
    from rich.console import Console

    col = MetricCollection.from_configs([dict(type="L1"), dict(type="PSNR"), dict(type="PSNR", quantize="round")])
    assert list(col.metrics) == ["L1", "PSNR", "PSNR_2"]
    x, _ = _pair(b=2)
    col.update(x, x, video="v0")  # identical frames -> PSNR inf
    res = col.compute()
    assert math.isinf(res["PSNR"]["value"])
    res["FAKE"] = {"value": float("nan"), "paper_exact": False, "backend": "mediapipe-facemesh", "skipped": 3,
                   "skipped_reasons": {"no_face_pred": 3}, "frames": 0, "convention": "demo"}
    console = Console(record=True, width=200)
    print_report(res, console=console)
    text = console.export_text()
    assert "NO (not comparable with papers)" in text and "no_face_pred: 3" in text and "inf" in text
    assert results_table(res).row_count == 4
    p = write_json(res, tmp_path / "out" / "eval.json", meta={"recipe": "x.py"})
    data = json.loads(p.read_text())
    assert data["metrics"]["PSNR"]["value"] == "inf" and data["metrics"]["FAKE"]["value"] is None
    assert data["metrics"]["L1"]["videos"] == 1 and data["meta"]["recipe"] == "x.py"

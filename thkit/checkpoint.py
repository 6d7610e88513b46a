"""thkit checkpoints: plain tensors only, written atomically, read with ``weights_only=True``.

A thkit checkpoint is ``{'format': 'thkit-ckpt/1', 'state_dict': {net: {key: tensor}}, 'meta': {...}}``;
``net`` is ``'model'`` for the generator and e.g. ``'discriminator'`` for training-only networks.  Only
dicts, lists, strings, numbers and tensors are stored, so :func:`torch.load` with ``weights_only=True``
(torch's safe default) reads it.  Unpickling arbitrary objects needs ``trusted=True``, and says so.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any

import torch

from thkit.errors import CheckpointError

FORMAT = "thkit-ckpt/1"


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file in the same folder, fsync, then rename it over ``path``.

    A crash (or an exception in ``write``) leaves the previous ``path`` intact and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path: str | os.PathLike, state_dicts: dict[str, dict[str, torch.Tensor]], meta: dict | None = None) -> Path:
    """Write a thkit checkpoint atomically."""
    clean = {net: {k: v.detach().cpu() for k, v in sd.items()} for net, sd in state_dicts.items()}
    return atomic_save({"format": FORMAT, "state_dict": clean, "meta": dict(meta or {})}, path)


def torch_load(path: str | os.PathLike, trusted: bool = False) -> Any:
    """Load a file with ``weights_only=True``; with ``trusted=True``, allow full unpickling (and warn)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        if not trusted:
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors and plain containers, so it was not unpickled "
                f"(weights_only=True). If you trust this file, pass --trusted (trusted=True). Detail: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
    warnings.warn(f"unpickling {path} with weights_only=False because it was marked trusted", stacklevel=2)
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(path: str | os.PathLike, trusted: bool = False) -> dict[str, Any]:
    """Read a thkit checkpoint (``{'state_dict': {net: sd}, 'meta': ...}``)."""
    obj = torch_load(path, trusted=trusted)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a thkit checkpoint (no format {FORMAT!r}); official checkpoints are read with "
            f"`thkit convert --from METHOD` or `--checkpoint-format METHOD`"
        )
    return obj


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str = "model") -> None:
    """``load_state_dict(strict=True)`` with an error that names missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:5]))
        raise CheckpointError(f"checkpoint does not match the {what}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------------------------------------
# official checkpoints
# --------------------------------------------------------------------------------------------------------
def detect_format(obj: Any) -> str:
    """Guess which method wrote a loaded checkpoint dict ('thkit', 'fomm', 'tpsmm', 'mcnet', 'smac')."""
    if not isinstance(obj, dict):
        return "unknown"
    if obj.get("format") == FORMAT:
        return "thkit"
    keys = set(obj)
    if {"inpainting_network", "dense_motion_network", "kp_detector"} <= keys:
        return "tpsmm"
    if {"generator", "kp_detector"} <= keys:
        gen = obj["generator"]
        if isinstance(gen, dict) and any(k.startswith("mbUnit.") for k in gen):
            return "mcnet"
        return "fomm"
    if "params_ema" in keys or "params" in keys:
        return "smac"
    return "unknown"


def convert_official(objs: list[Any] | Any, method: str, **options) -> dict[str, dict[str, torch.Tensor]]:
    """Map loaded official checkpoint(s) of ``method`` to thkit state dicts ``{net: sd}``."""
    from thkit.convert import CONVERTERS
    from thkit.errors import suggest

    if method not in CONVERTERS:
        raise CheckpointError(f"no converter for {method!r}; {suggest(method, CONVERTERS)}")
    fn = CONVERTERS[method]
    files = objs if isinstance(objs, list) else [objs]
    prepare = getattr(fn, "prepare", None)
    if prepare is not None:
        official = prepare(files, **options)
    else:
        if len(files) != 1:
            raise CheckpointError(f"the {method} converter takes one checkpoint file, got {len(files)}")
        official = files[0]
    return fn(official)


def convert_file(sources: list[str] | str, output: str | os.PathLike, method: str, trusted: bool = False,
                 use_ema: bool = True) -> Path:
    """Read official checkpoint file(s), convert, and write a thkit checkpoint."""
    import hashlib

    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    objs = [torch_load(s, trusted=trusted) for s in sources]
    opts = {"use_ema": use_ema} if method == "smac" else {}
    sds = convert_official(objs, method, **opts)
    meta = {"converted_from": method, "sources": [str(s) for s in sources]}
    meta["sha256"] = [hashlib.sha256(Path(s).read_bytes()).hexdigest() for s in sources]
    return save_checkpoint(output, sds, meta)


def load_into(model: torch.nn.Module, path: str | os.PathLike, fmt: str = "auto", trusted: bool = False,
              extra: dict[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Load a thkit checkpoint, or an official one (converted on the fly), into ``model`` (and ``extra`` nets)."""
    obj = torch_load(path, trusted=trusted)
    if fmt == "auto":
        fmt = detect_format(obj)
        if fmt == "unknown":
            raise CheckpointError(
                f"cannot tell which method wrote {path}; pass --checkpoint-format (thkit, fomm, tpsmm, smac, ...)")
    if fmt == "thkit":
        if obj.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a thkit checkpoint")
        sds = obj["state_dict"]
    else:
        sds = convert_official(obj, fmt)
    if "model" not in sds:
        raise CheckpointError(f"{path} has no 'model' weights (has: {', '.join(sds)})")
    load_state_dict_strict(model, sds["model"], "model")
    for name, net in (extra or {}).items():
        if name in sds:
            load_state_dict_strict(net, sds[name], name)
    return sds

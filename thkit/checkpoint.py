"""thkit checkpoints: plain tensors only, written atomically, read with ``weights_only=True``.

A thkit checkpoint is ``{'format': 'thkit-ckpt/1', 'state_dict': {net: {key: tensor}}, 'meta': {...}}``;
``net`` is ``'model'`` for the generator and e.g. ``'discriminator'`` for training-only networks.  Only
dicts, lists, strings, numbers and tensors are stored, so :func:`torch.load` with ``weights_only=True``
(torch's safe default) reads it.  Unpickling arbitrary objects needs ``trusted=True``, and says so.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from thkit.errors import CheckpointError
from thkit.fileio import atomic_save, atomic_write  # noqa: F401  (re-exported: thkit.checkpoint.atomic_write)

FORMAT = "thkit-ckpt/1"


def save_checkpoint(path: str | os.PathLike, state_dicts: dict[str, dict[str, torch.Tensor]],
                    meta: dict | None = None) -> Path:
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
# official checkpoints: every method-specific question goes to the registered converters (thkit.convert)
# --------------------------------------------------------------------------------------------------------
def detect_format(obj: Any) -> str:
    """``'thkit'``, the name of the one registered converter that fits ``obj``, or ``'unknown'``."""
    from thkit.convert import detect_method

    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return "thkit"
    try:
        return detect_method(obj)
    except CheckpointError:
        return "unknown"


def convert_official(objs: list[Any] | Any, method: str, **options) -> dict[str, dict[str, torch.Tensor]]:
    """Map loaded official checkpoint(s) of ``method`` to thkit state dicts ``{net: sd}`` (``options`` go to the
    converter, e.g. SMAC's ``use_ema``)."""
    from thkit.convert import convert_files

    return convert_files(objs if isinstance(objs, list) else [objs], method, **options)


def read_official(sources: list[str | os.PathLike], method: str = "auto", trusted: bool = False,
                  **options) -> tuple[str, dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read official checkpoint file(s), detect the method when ``method='auto'`` (every file must fit the same
    converter), convert.  Returns ``(method, state_dicts, meta)``; meta names the files and their sha256."""
    from thkit.convert import detect_method

    objs = [torch_load(s, trusted=trusted) for s in sources]
    if method == "auto":
        found = {detect_method(o, what=str(s)) for o, s in zip(objs, sources)}
        if len(found) != 1:
            raise CheckpointError(f"the files {', '.join(map(str, sources))} were written by different methods "
                                  f"({', '.join(sorted(found))})")
        method = found.pop()
    sds = convert_official(objs, method, **options)
    meta = {"method": method, "sources": [{"file": Path(s).name, "sha256": _sha256(s)} for s in sources]}
    return method, sds, meta


def _sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_file(sources: list[str] | str, output: str | os.PathLike, method: str = "auto", trusted: bool = False,
                 **options) -> Path:
    """Read official checkpoint file(s), convert, and write a thkit checkpoint (the legacy single-file format;
    :func:`thkit.api.convert` writes model folders)."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    method, sds, meta = read_official(sources, method, trusted, **options)
    meta = {"converted_from": method, "sources": [str(s) for s in sources],
            "sha256": [m["sha256"] for m in meta["sources"]]}
    return save_checkpoint(output, sds, meta)


def read_state_dicts(path: str | os.PathLike, fmt: str = "auto", trusted: bool = False,
                     **options) -> dict[str, dict[str, torch.Tensor]]:
    """The weights of a model folder, a thkit checkpoint, or an official file (converted), as ``{net: sd}``."""
    from thkit.model_folder import is_model_folder, read_weights

    if is_model_folder(path):
        return read_weights(path)
    obj = torch_load(path, trusted=trusted)
    if fmt == "auto":
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            fmt = "thkit"
        else:
            from thkit.convert import detect_method

            fmt = detect_method(obj, what=str(path))
    if fmt == "thkit":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a thkit checkpoint")
        return obj["state_dict"]
    return convert_official(obj, fmt, **options)


def load_into(model: torch.nn.Module, path: str | os.PathLike, fmt: str = "auto", trusted: bool = False,
              extra: dict[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Load a model folder, a thkit checkpoint, or an official one (converted on the fly), into ``model`` (and
    ``extra`` nets)."""
    sds = read_state_dicts(path, fmt, trusted)
    if "model" not in sds:
        raise CheckpointError(f"{path} has no 'model' weights (has: {', '.join(sds)})")
    load_state_dict_strict(model, sds["model"], "model")
    for name, net in (extra or {}).items():
        if name in sds:
            load_state_dict_strict(net, sds[name], name)
    return sds

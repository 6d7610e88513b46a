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
from typing import Any

import torch

from thkit.errors import CheckpointError

FORMAT = "thkit-ckpt/1"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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

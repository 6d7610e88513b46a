"""Model folders: what ``thkit convert`` and training's weight export write, and what ``create_model`` loads.

A model folder is three files::

    model.safetensors   the weights, flat: '<module>.<key>' for each module ('model', 'discriminator', ...)
    recipe.json         the resolved recipe as plain data (bases merged, overrides applied)
    meta.json           format, image size, input range, method, the source files' sha256, thkit version

Loading one never executes code: the recipe is JSON (a Python recipe would run whatever it contains) and the
weights are safetensors (no pickle).  A folder missing a file, a truncated or corrupted ``model.safetensors``
and a ``recipe.json`` that names an unregistered part each get one line naming the file and the problem.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from thkit.errors import CheckpointError, RecipeError
from thkit.fileio import atomic_write

FORMAT = "thkit-model/1"
WEIGHTS, RECIPE, META = "model.safetensors", "recipe.json", "meta.json"
Tensor = torch.Tensor


def is_model_folder(path: str | os.PathLike) -> bool:
    """A folder holding at least one of the three files (so a half-written one is reported, not ignored)."""
    p = Path(path)
    return p.is_dir() and any((p / f).exists() for f in (WEIGHTS, RECIPE, META))


def plain(obj: Any) -> Any:
    """A recipe value as JSON data (tuples become lists); anything else is a RecipeError naming it."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise RecipeError("", f"the recipe holds a {type(obj).__name__} ({obj!r}), which a model folder cannot store "
                          f"as JSON; use registered names and plain values")


def save_model_folder(folder: str | os.PathLike, state_dicts: Mapping[str, Mapping[str, Tensor]],
                      recipe: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
    """Write a model folder (each file atomically; weights last, so a folder with weights is complete)."""
    from safetensors.torch import save as st_save

    import thkit

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a folder (a model folder is written there)")
    rec = plain(recipe)
    rec.pop("_base_", None)
    flat: dict[str, Tensor] = {}
    for net, sd in state_dicts.items():
        for k, v in sd.items():
            flat[f"{net}.{k}"] = v.detach().cpu().contiguous()
    m = {"format": FORMAT, "thkit_version": thkit.__version__, "image_size": rec.get("image_size"),
         "input_range": list((rec.get("model") or {}).get("input_range", (0.0, 1.0))),
         "modules": sorted(state_dicts)}
    m.update(plain(dict(meta or {})))
    atomic_write(folder / RECIPE, lambda f: f.write(json.dumps(rec, indent=1) + "\n"), mode="w")
    atomic_write(folder / META, lambda f: f.write(json.dumps(m, indent=1) + "\n"), mode="w")
    atomic_write(folder / WEIGHTS, lambda f: f.write(st_save(flat, metadata={"format": FORMAT})))
    return folder


def _need(folder: Path, name: str) -> Path:
    p = folder / name
    if not p.is_file():
        have = ", ".join(sorted(x.name for x in folder.iterdir())) or "nothing"
        raise CheckpointError(f"model folder {folder} has no {name} (has: {have}; a model folder holds "
                              f"{WEIGHTS}, {RECIPE} and {META})")
    return p


def _json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(obj).__name__}")
    return obj


def read_recipe(folder: str | os.PathLike):
    """The folder's recipe as an mmengine Config (read as JSON data: no code runs) and its meta dict."""
    from mmengine.config import Config

    folder = Path(folder)
    rec = _json(_need(folder, RECIPE))
    meta = _json(_need(folder, META))
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder / META}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(rec.get("model"), dict):
        raise CheckpointError(f"{folder / RECIPE} defines no 'model'")
    return Config(rec), meta


def read_weights(folder: str | os.PathLike) -> dict[str, dict[str, Tensor]]:
    """The folder's weights as ``{module: state_dict}``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _need(Path(folder), WEIGHTS)
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is truncated or corrupted ({str(e).splitlines()[0] if str(e) else e!r}); "
                              f"write it again with thkit convert or the training's weight export") from e
    out: dict[str, dict[str, Tensor]] = {}
    for k, v in flat.items():
        net, _, key = k.partition(".")
        out.setdefault(net, {})[key] = v
    return out


__all__ = ["FORMAT", "META", "RECIPE", "WEIGHTS", "is_model_folder", "plain", "read_recipe", "read_weights",
           "save_model_folder"]

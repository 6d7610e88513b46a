"""Recipes: Python files read with :class:`mmengine.config.Config`.

A recipe defines at least ``model = dict(type=..., ...)`` and usually ``image_size``; ``_base_`` lists the
recipes it builds on (deep-merged; ``_delete_=True`` replaces a subtree), and ``--cfg-options k=v``
overrides any value.  A variant is a few lines on top of its base::

    _base_ = ['./small.py']
    model = dict(compensator=None)
"""
from __future__ import annotations

import math
import os
import traceback
from pathlib import Path
from typing import Any

from mmengine.config import Config

from thkit.errors import RecipeError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe path as given, or relative to the repository's ``recipes/`` (``fomm/vox256``)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (RECIPES_DIR / p, RECIPES_DIR / p.with_suffix(".py")):
        if cand.is_file():
            return cand
    raise RecipeError("", f"recipe file not found: {name}")


def load_recipe(path: str | os.PathLike, cfg_options: dict[str, Any] | None = None,
                size: int | None = None) -> Config:
    """Read a recipe (following ``_base_``), apply overrides, and return the resolved :class:`Config`.

    ``size``: run the recipe at this image size, with every setting that depends on it (:func:`size_options`);
    explicit ``cfg_options`` still win.  A recipe that does not parse is reported with its file and line.
    """
    p = find_recipe(path)
    try:
        cfg = Config.fromfile(str(p))
    except SyntaxError as e:
        fname = e.filename if e.filename and not e.filename.startswith("<") else str(p)
        raise RecipeError("", f"recipe {fname} does not parse: line {e.lineno}: {e.msg}") from e
    except FileNotFoundError as e:
        raise RecipeError("", f"recipe {p}: {e}") from e
    except Exception as e:  # noqa: BLE001 - errors raised while executing the recipe's Python
        where = _recipe_frame(e, p)
        raise RecipeError("", f"recipe {where} failed: {type(e).__name__}: {e}") from e
    if size is not None and int(size) != cfg.get("image_size"):
        cfg.merge_from_dict(size_options(cfg, size))
    if cfg_options:
        try:
            cfg.merge_from_dict(dict(cfg_options))
        except Exception as e:  # noqa: BLE001
            raise RecipeError("", f"cannot apply --cfg-options {cfg_options}: {e}") from e
    if "model" not in cfg:
        raise RecipeError("model", f"recipe {p} defines no 'model'")
    return cfg


def _recipe_frame(exc: BaseException, path: Path) -> str:
    """'file, line N' of the innermost traceback frame inside a recipe file (else the path)."""
    for fs in reversed(traceback.extract_tb(exc.__traceback__)):
        if fs.filename.endswith(".py") and ("recipes" in fs.filename or Path(fs.filename).name == path.name):
            return f"{fs.filename}, line {fs.lineno}"
    # mmengine executes a temporary copy; SyntaxErrors carry the original name, others the temp name
    return str(path)


def list_recipes(root: str | os.PathLike | None = None) -> list[Path]:
    """Every recipe under ``recipes/`` except the shared parts in ``_base_``."""
    root = Path(root) if root else RECIPES_DIR
    return sorted(p for p in root.rglob("*.py") if "_base_" not in p.parts)


def build_from_recipe(cfg: Config):
    """Build ``cfg.model`` (importing built-ins and loading plugins first)."""
    from thkit.builder import build_model
    from thkit.plugins import load_plugins

    load_plugins()
    return build_model(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model)


def size_options(cfg: Config, size: int) -> dict[str, Any]:
    """``--cfg-options`` that run a recipe at another image size, with everything that depends on it.

    A recipe's derived values (``num_tokens = token_grid ** 2``) are computed when the file is read, so
    overriding ``image_size`` alone would leave them at the recipe's size.  This returns ``image_size`` plus:

    * every retrieval transformer's ``num_tokens`` (SMAC's learned position embeddings): the token grid scales
      with the image (32 x 32 tokens at 256 px, 8 x 8 at 64 px);
    * ``losses.perceptual.scales``: the pyramid scales at which the image is still large enough for the VGG
      slices the loss uses (:func:`thkit.losses.perceptual.scales_that_fit`), when some are not.

    Raises :class:`RecipeError` when ``size`` does not give a whole token grid or no perceptual scale fits.
    """
    size = int(size)
    if size <= 0:
        raise RecipeError("image_size", f"the image size must be a positive number of pixels, got {size}")
    opts: dict[str, Any] = {"image_size": size}
    base = int(cfg.get("image_size", size))
    comp = (cfg.get("model") or {}).get("compensator") or {}
    for part, sub in comp.items():
        tokens = (sub.get("transformer") or {}).get("num_tokens") if isinstance(sub, dict) else None
        if tokens is None:
            continue
        grid = math.isqrt(int(tokens))
        if grid * grid != tokens or (grid * size) % base:
            raise RecipeError(f"model.compensator.{part}.transformer.num_tokens",
                              f"{tokens} tokens at {base} px do not scale to a whole square grid at {size} px "
                              f"(use a multiple of {base // math.gcd(base, grid)} px)")
        opts[f"model.compensator.{part}.transformer.num_tokens"] = (grid * size // base) ** 2
    perc = (cfg.get("losses") or {}).get("perceptual")
    if perc is not None:
        from thkit.losses.perceptual import FOMM_LAYER_WEIGHTS, PYRAMID_SCALES, scales_that_fit

        scales = [float(s) for s in perc.get("scales", PYRAMID_SCALES)]
        fit = scales_that_fit(size, scales, perc.get("layer_weights", FOMM_LAYER_WEIGHTS),
                              perc.get("pyramid_mode", "slice"))
        if not fit:
            raise RecipeError("losses.perceptual.scales",
                              f"no pyramid scale of {scales} leaves a {size} px image large enough for the VGG "
                              f"slices the perceptual loss uses")
        if fit != scales:
            opts["losses.perceptual.scales"] = fit
    return opts

"""Recipes: Python files read with :class:`mmengine.config.Config`.

A recipe defines at least ``model = dict(type=..., ...)`` and usually ``image_size``; ``_base_`` lists the
recipes it builds on (deep-merged; ``_delete_=True`` replaces a subtree), and ``--cfg-options k=v``
overrides any value.  The builder hands ``image_size`` to every part that takes it, so no recipe derives a
part's setting from the size by hand.  A variant is a few lines on top of its base::

    _base_ = ['./small.py']
    model = dict(compensator=None)
"""
from __future__ import annotations

import numbers
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

    ``size``: run the recipe at this image size: it sets ``image_size`` (explicit ``cfg_options`` still win),
    which the builder hands to every part that takes it (:func:`thkit.builder.build`), so what depends on the
    size follows when the parts are built, and a size a part cannot run at is reported then, with its recipe
    path.  A recipe that does not parse is reported with its file and line.
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
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
            raise RecipeError("image_size", f"the image size must be a positive number of pixels, got {size!r}")
        cfg.merge_from_dict({"image_size": int(size)})
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
    """Build ``cfg.model`` (importing built-ins and loading plugins first), handing the recipe's ``image_size``
    to every part that takes it."""
    from thkit.builder import build_model
    from thkit.plugins import load_plugins

    load_plugins()
    return build_model(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model,
                       image_size=cfg.get("image_size"))


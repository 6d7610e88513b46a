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

RECIPE_GROUP = "thkit.recipes"  # entry points: name = "package.with.a.recipes.folder"


def _builtin_recipes_dir() -> Path:
    """The built-in recipes: ``thkit/recipes`` in an installed wheel (the repository's top-level ``recipes/``
    mapped into the package by setup.py), the repository's ``recipes/`` in a checkout or an editable install."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("thkit.recipes")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        if Path(loc).is_dir():
            return Path(loc)
    return Path(__file__).resolve().parent.parent / "recipes"


RECIPES_DIR = _builtin_recipes_dir()


def recipe_roots() -> list[tuple[str, Path]]:
    """``(origin, folder)`` of every recipe collection: the built-in one first, then each plugin's
    (``thkit.recipes`` entry points naming a package whose folder holds ``<method>/<variant>.py``)."""
    import importlib.metadata
    import importlib.util

    roots = [("built-in", RECIPES_DIR)]
    if os.environ.get("THKIT_NO_PLUGINS", "").strip().lower() in ("1", "true", "yes", "on"):
        return roots
    for ep in importlib.metadata.entry_points(group=RECIPE_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            spec = importlib.util.find_spec(ep.value)
            locs = list(spec.submodule_search_locations or []) if spec is not None else []
        except (ImportError, ValueError):
            locs = []
        for loc in locs:
            if Path(loc).is_dir():
                roots.append((f"plugin {ep.name} ({dist})", Path(loc)))
                break
    return roots


def recipe_index() -> dict[str, tuple[Path, str]]:
    """Every recipe by name (``fomm/vox256``): ``(file, origin)``; a built-in name wins over a plugin's."""
    index: dict[str, tuple[Path, str]] = {}
    for origin, root in recipe_roots():
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root)
            if "_base_" in rel.parts or f.name.startswith("__"):
                continue
            index.setdefault(rel.with_suffix("").as_posix(), (f, origin))
    return index


def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe file as given, or a recipe name (``fomm/vox256``, built-in or a plugin's); an unknown name is a
    RecipeError naming the closest recipes."""
    from thkit.errors import suggest

    p = Path(name)
    if p.is_file():
        return p
    index = recipe_index()
    key = p.with_suffix("").as_posix() if p.suffix == ".py" else p.as_posix()
    key = key.removeprefix("recipes/")
    if key in index:
        return index[key][0]
    if p.is_absolute() or p.suffix == ".py":
        raise RecipeError("", f"recipe file not found: {name}")
    raise RecipeError("", f"no recipe {str(name)!r} (not a file, not a recipe name); {suggest(key, index)} "
                          f"(`thkit list --recipes` lists them)")


def recipe_summary(path: str | os.PathLike) -> str:
    """A recipe's first comment line (``# ...`` before any code), or its docstring's first line."""
    for line in Path(path).read_text().splitlines():
        s = line.strip()
        if s.startswith("#"):
            return s.lstrip("#").strip()
        if s[:3] in ('"' * 3, "'" * 3):
            return s.strip("\"'").strip()
        if s:
            break
    return ""


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
    """Every recipe file (built-in and plugins', or under ``root``) except the shared parts in ``_base_``."""
    if root is not None:
        return sorted(p for p in Path(root).rglob("*.py") if "_base_" not in p.relative_to(root).parts)
    return sorted(f for f, _ in recipe_index().values())


def build_from_recipe(cfg: Config):
    """Build ``cfg.model`` (importing built-ins and loading plugins first), handing the recipe's ``image_size``
    to every part that takes it."""
    from thkit.builder import build_model
    from thkit.plugins import load_plugins

    load_plugins()
    return build_model(cfg.model,
                       image_size=cfg.get("image_size"))


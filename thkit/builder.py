"""Build parts from recipe dicts, with errors that name the recipe path.

``build(kind, cfg, name=...)`` is the one front door (timm's ``create_model``, mmengine's ``build``):

* ``cfg`` is ``dict(type=..., **kwargs)``; ``type`` is a registered name of that kind (or a class);
* an unknown type lists the closest registered names of that kind;
* an unknown or missing argument names its recipe path (``model.motion.num_kp``);
* the built object is checked against the kind's interface (:mod:`thkit.interfaces`);
* nested builds (a part building its own sub-parts) extend the path automatically.
"""
from __future__ import annotations

import contextvars
import inspect
from collections.abc import Mapping
from typing import Any

from thkit.errors import RecipeError, suggest
from thkit.interfaces import check_part
from thkit.registry import import_builtins, kind_of

_PATH: contextvars.ContextVar[str] = contextvars.ContextVar("thkit_build_path", default="")


def current_path() -> str:
    """The recipe path of the part being built right now ('' at top level)."""
    return _PATH.get()


def _join(base: str, name: str | None) -> str:
    if not name:
        return base
    return f"{base}.{name}" if base else name


def resolve_type(kind: str, type_: Any, path: str = ""):
    """Return the class registered as ``type_`` in ``kind`` (classes pass through)."""
    import_builtins()
    k = kind_of(kind)
    if not isinstance(type_, str):
        if callable(type_):
            return type_
        raise RecipeError(_join(path, "type"), f"expected a registered {kind} name, got {type_!r}")
    if "." in type_ and k.registry.get(type_) is None:
        # a full import path (what Config.dump writes for class objects)
        try:
            import importlib

            mod, _, attr = type_.rpartition(".")
            return getattr(importlib.import_module(mod), attr)
        except Exception:  # noqa: BLE001 - fall through to the friendly error
            pass
    cls = k.registry.get(type_)
    if cls is None:
        names = list(k.registry.module_dict)
        raise RecipeError(_join(path, "type"), f"unknown {kind} {type_!r}; {suggest(type_, names)}")
    return cls


def check_arguments(cls, kwargs: Mapping[str, Any], path: str) -> None:
    """Raise a :class:`RecipeError` for an unexpected or a missing constructor argument."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepts_any = True
    else:
        accepts_any = False
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not accepts_any:
        for key in kwargs:
            if key not in named:
                raise RecipeError(
                    _join(path, key),
                    f"unknown argument for {cls.__name__}; {suggest(key, named)} "
                    f"(accepted: {', '.join(named)})",
                )
    for n, p in params.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and n not in kwargs:
            raise RecipeError(_join(path, n), f"missing required argument of {cls.__name__}")


def build(kind: str, cfg: Any, name: str | None = None, *, path: str | None = None, default_args: Mapping | None = None):
    """Build a part of ``kind`` from ``cfg`` (``None`` stays ``None``; an object passes through).

    ``name`` is the attribute name under the current recipe path (``'motion'`` gives ``model.motion`` when
    called while building ``model``); ``path`` overrides the whole path.
    """
    full = path if path is not None else _join(current_path(), name)
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        # an already-built object (a module passed in code)
        check_part(kind, cfg, full)
        return cfg
    args = dict(cfg)
    if "type" not in args:
        raise RecipeError(full, f"a {kind} config needs a 'type' (a registered {kind} name)")
    type_ = args.pop("type")
    cls = resolve_type(kind, type_, full)
    if default_args:
        for k, v in default_args.items():
            args.setdefault(k, v)
    check_arguments(cls, args, full)
    token = _PATH.set(full)
    try:
        try:
            obj = cls(**args)
        except RecipeError:
            raise
        except (TypeError, ValueError) as e:  # constructor-level validation, attributed to the path
            raise RecipeError(full, f"{cls.__name__}: {e}") from e
    finally:
        _PATH.reset(token)
    check_part(kind, obj, full)
    _tag(obj, kind, type_ if isinstance(type_, str) else cls.__name__, full)
    return obj


def _tag(obj: Any, kind: str, type_name: str, path: str) -> None:
    """Remember how a part was built (for ``thkit build``'s component tree)."""
    try:
        object.__setattr__(obj, "_thkit_kind", kind)
        object.__setattr__(obj, "_thkit_type", type_name)
        object.__setattr__(obj, "_thkit_path", path)
    except (AttributeError, TypeError):
        pass


def build_model(cfg: Any):
    """Build the ``model`` entry of a recipe (kind ``model``), with paths starting at ``model``."""
    return build("model", cfg, path="model")

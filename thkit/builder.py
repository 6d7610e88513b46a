"""Build parts from recipe dicts, with errors that name the recipe path.

``build(kind, cfg, name=...)`` is the one front door (timm's ``create_model``, mmengine's ``build``):

* ``cfg`` is ``dict(type=..., **kwargs)``; ``type`` is a registered name of that kind (or a class);
* an unknown type lists the closest registered names of that kind;
* an unknown or missing argument names its recipe path (``model.motion.num_kp``);
* the built object is checked against the kind's interface (:mod:`thkit.interfaces`);
* nested builds (a part building its own sub-parts) extend the path automatically;
* recipe-wide settings (:data:`RECIPE_SETTINGS`: the recipe's ``image_size``) are handed to every part whose
  constructor names them and whose config does not set them (an explicit value wins, and the parts built
  inside it inherit that value).  :func:`recipe_settings` sets them; :func:`build_model` takes them.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from thkit.errors import RecipeError, suggest
from thkit.interfaces import check_part
from thkit.registry import import_builtins, kind_of

_PATH: contextvars.ContextVar[str] = contextvars.ContextVar("thkit_build_path", default="")

#: recipe-wide settings a part receives when its constructor names them and its config does not set them
RECIPE_SETTINGS: tuple[str, ...] = ("image_size",)
_SETTINGS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "thkit_build_settings", default=MappingProxyType({}))


def current_path() -> str:
    """The recipe path of the part being built right now ('' at top level)."""
    return _PATH.get()


def current_settings() -> dict[str, Any]:
    """The recipe-wide settings parts built right now receive (``{'image_size': 256}``; empty when unknown)."""
    return dict(_SETTINGS.get())


@contextlib.contextmanager
def recipe_settings(**values: Any) -> Iterator[dict[str, Any]]:
    """Hand these recipe-wide settings (:data:`RECIPE_SETTINGS`) to the parts built inside the ``with``;
    ``None`` leaves a setting as it is.  Yields the settings in force."""
    unknown = [k for k in values if k not in RECIPE_SETTINGS]
    if unknown:
        raise TypeError(f"recipe_settings: unknown setting {', '.join(unknown)} (known: {', '.join(RECIPE_SETTINGS)})")
    merged = {**_SETTINGS.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _SETTINGS.set(MappingProxyType(merged))
    try:
        yield dict(merged)
    finally:
        _SETTINGS.reset(token)


def _named_parameters(cls) -> set[str]:
    """The constructor arguments ``cls`` takes by name (``**kwargs`` names none)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


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


def build(kind: str, cfg: Any, name: str | None = None, *, path: str | None = None,
          default_args: Mapping | None = None):
    """Build a part of ``kind`` from ``cfg``, a dict or an mmengine ``ConfigDict`` (``None`` stays ``None``; an
    object passes through).

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
    args = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)  # an mmengine ConfigDict: plain dicts inside
    if "type" not in args:
        raise RecipeError(full, f"a {kind} config needs a 'type' (a registered {kind} name)")
    type_ = args.pop("type")
    cls = resolve_type(kind, type_, full)
    if default_args:
        for k, v in default_args.items():
            args.setdefault(k, v)
    settings = dict(_SETTINGS.get())
    named = _named_parameters(cls)
    for key in RECIPE_SETTINGS:
        if key in args:  # an explicit value wins, here and in the parts built inside this one
            settings[key] = args[key]
        elif key in settings and key in named:
            args[key] = settings[key]
    check_arguments(cls, args, full)
    token = _PATH.set(full)
    settings_token = _SETTINGS.set(MappingProxyType(settings))
    try:
        try:
            obj = cls(**args)
        except RecipeError:
            raise
        except (TypeError, ValueError) as e:  # constructor-level validation, attributed to the path
            raise RecipeError(full, f"{cls.__name__}: {e}") from e
    finally:
        _SETTINGS.reset(settings_token)
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


def build_model(cfg: Any, *, image_size: int | None = None):
    """Build the ``model`` entry of a recipe (kind ``model``), with paths starting at ``model``.

    ``image_size``: the recipe's ``image_size``, handed to every part that takes it (e.g. a token grid that
    follows the image); ``None`` keeps the settings in force (:func:`recipe_settings`).
    ``build_from_recipe(cfg)`` (:mod:`thkit.recipe`) passes a recipe's own.
    """
    with recipe_settings(image_size=image_size):
        return build("model", cfg, path="model")

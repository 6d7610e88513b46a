"""Converters from official checkpoints (and configurations) to thkit, one registered class per method.

A converter (:class:`~thkit.convert.base.Converter`) is a part of kind ``converter``: ``thkit list converter``
lists them, plugins register more, and generic code only asks them: :func:`detect_method` scores a loaded file
against every registered converter; :func:`get_converter` returns one by name.  The key mappings are explicit
and total: an official key that no rule maps, or a thkit key that nothing fills, is an error naming it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thkit._imports import import_submodules
from thkit.convert.base import Converter, StateDicts
from thkit.errors import CheckpointError, suggest
from thkit.registry import CONVERTERS

_INSTANCES: dict[str, Converter] = {}


def converter_names() -> list[str]:
    """Registered converter names (built-ins and plugins')."""
    from thkit.plugins import load_plugins

    load_plugins()
    return sorted(CONVERTERS.module_dict)


def get_converter(method: str) -> Converter:
    """The registered converter ``method`` (an instance), or a CheckpointError naming the closest ones."""
    names = converter_names()
    if method not in names:
        raise CheckpointError(f"no converter for {method!r}; {suggest(method, names)}")
    cls = CONVERTERS.module_dict[method]
    inst = _INSTANCES.get(method)
    if inst is None or type(inst) is not cls:
        inst = _INSTANCES[method] = cls()
        inst.method = inst.method or method
    return inst


def detect_scores(checkpoint: Any) -> list[tuple[str, float, str]]:
    """``(method, score, reason)`` for every registered converter, best first."""
    res = []
    for name in converter_names():
        try:
            score, why = get_converter(name).detect(checkpoint)
        except Exception as e:  # noqa: BLE001 - a plugin's detect must not break detection
            score, why = 0.0, f"detect failed: {type(e).__name__}: {e}"
        res.append((name, float(score), why))
    return sorted(res, key=lambda r: -r[1])


def detect_method(checkpoint: Any, what: str = "the checkpoint") -> str:
    """The one converter whose :meth:`~Converter.detect` fits ``checkpoint``; when none or several fit, a
    CheckpointError listing every converter's score and reason."""
    scores = detect_scores(checkpoint)
    fits = [s for s in scores if s[1] >= get_converter(s[0]).FIT]
    if len(fits) == 1:
        return fits[0][0]
    table = "; ".join(f"{m} {s:.2f} ({why})" for m, s, why in scores)
    if not fits:
        raise CheckpointError(f"cannot tell which method wrote {what}: no converter fits (scores: {table}); "
                              f"pass --checkpoint-format METHOD")
    raise CheckpointError(f"{what} fits several converters ({', '.join(m for m, _, _ in fits)}; scores: {table}); "
                          f"pass --checkpoint-format METHOD")


def convert_files(files: Sequence[Any], method: str, **options: Any) -> StateDicts:
    """Loaded official file(s) of ``method`` -> thkit state dicts (``options`` go to the converter's combine)."""
    conv = get_converter(method)
    return conv.convert(conv.combine(list(files), **options))


__all__ = ["CONVERTERS", "Converter", "convert_files", "converter_names", "detect_method", "detect_scores",
           "get_converter"] + import_submodules(__name__, __path__)

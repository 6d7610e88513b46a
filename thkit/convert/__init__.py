"""Converters from official checkpoints to thkit checkpoints.

A converter is registered per method (``fomm``, ``tpsmm``, ``smac``, ...) and maps the official networks'
state dicts onto thkit's module structure.  The key mapping is explicit and total: an official key that no
rule maps, or a thkit key that nothing fills, is an error naming it.
"""
from __future__ import annotations

from collections.abc import Callable

from thkit._imports import import_submodules

#: method name -> function(official: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]
CONVERTERS: dict[str, Callable] = {}


def register_converter(name: str):
    def deco(fn):
        if name in CONVERTERS:
            raise KeyError(f"converter {name!r} is already registered")
        CONVERTERS[name] = fn
        return fn

    return deco


__all__ = ["CONVERTERS", "register_converter"] + import_submodules(__name__, __path__)

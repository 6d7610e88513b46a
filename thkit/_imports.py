"""Import every public submodule of a component package, so its parts register themselves."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str, path) -> list[str]:
    names = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{package}.{info.name}")
        names.append(info.name)
    return names

"""mmengine 0.10.x on today's setuptools and torch.

* ``pkg_resources`` is gone from recent setuptools; mmengine's ``is_installed`` / ``get_installed_path``
  import it lazily and crash (this breaks ``read_base`` from installed packages and ``pkg::`` bases).
  We replace both, in every module that bound them by name, with ``importlib``-based versions.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os.path as osp

_APPLIED = False


def is_installed(package: str) -> bool:
    """``importlib`` replacement of :func:`mmengine.utils.is_installed` (no ``pkg_resources``)."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def get_installed_path(package: str) -> str:
    """``importlib`` replacement of :func:`mmengine.utils.get_installed_path`."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise importlib.metadata.PackageNotFoundError(package)
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return osp.dirname(spec.origin)


def apply() -> None:
    """Patch mmengine once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    import mmengine.utils
    import mmengine.utils.package_utils as pu

    targets = [pu, mmengine.utils]
    try:
        import mmengine.config.config as cc

        targets.append(cc)
    except ImportError:  # pragma: no cover - mmengine layout change
        pass
    for mod in targets:
        if hasattr(mod, "is_installed"):
            mod.is_installed = is_installed
        if hasattr(mod, "get_installed_path"):
            mod.get_installed_path = get_installed_path
    _APPLIED = True

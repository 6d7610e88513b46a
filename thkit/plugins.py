"""Third-party plugins, discovered through the ``thkit.plugins`` entry-point group.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."thkit.plugins"]
    myplugin = "myplugin:register"     # a callable run once, or just "myplugin" (importing registers)

and registers parts with the usual decorators (``@WARPERS.register_module()``).

Rules:

* built-in parts are imported before any plugin, so a plugin can never take a built-in name;
* each plugin loads in isolation: if it fails to import, raises, or registers a name that is taken, it is
  reported (with its distribution and the error) and whatever it registered is rolled back, and the host
  goes on; ``strict=True`` (``thkit plugins --strict``, or ``THKIT_STRICT_PLUGINS=1``) makes that an error;
* ``THKIT_NO_PLUGINS=1`` disables plugin loading; ``THKIT_DISABLE_PLUGINS=a,b`` skips the named plugins.
"""
from __future__ import annotations

import importlib.metadata
import os
import traceback
from dataclasses import dataclass, field

from thkit.errors import ThkitError
from thkit.registry import KINDS, import_builtins

GROUP = "thkit.plugins"
ENV_DISABLE_ALL = "THKIT_NO_PLUGINS"
ENV_DISABLE = "THKIT_DISABLE_PLUGINS"
ENV_STRICT = "THKIT_STRICT_PLUGINS"


class PluginError(ThkitError):
    """A plugin failed to load while loading was strict."""


@dataclass
class PluginRecord:
    name: str
    target: str
    distribution: str
    version: str
    status: str = "pending"  # loaded | failed | disabled
    error: str = ""
    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


_RECORDS: dict[str, PluginRecord] = {}
_LOADED = False
#: (kind, registered name) -> PluginRecord of the plugin that registered it
ORIGINS: dict[tuple[str, str], PluginRecord] = {}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _snapshot() -> dict[str, set[str]]:
    return {kind: set(k.registry.module_dict) for kind, k in KINDS.items()}


def _rollback(before: dict[str, set[str]]) -> None:
    for kind, k in KINDS.items():
        for name in set(k.registry.module_dict) - before[kind]:
            del k.registry._module_dict[name]


def _entry_points():
    return list(importlib.metadata.entry_points(group=GROUP))


def load_plugins(strict: bool | None = None, reload: bool = False) -> list[PluginRecord]:
    """Discover and load every plugin once (idempotent unless ``reload``); return their records."""
    global _LOADED
    if strict is None:
        strict = _truthy(os.environ.get(ENV_STRICT))
    import_builtins()
    if _LOADED and not reload:
        records = list(_RECORDS.values())
        if strict:
            _raise_if_failed(records)
        return records
    if reload:
        for rec in _RECORDS.values():
            for kind, name in rec.registered:
                KINDS[kind].registry._module_dict.pop(name, None)
                ORIGINS.pop((kind, name), None)
        _RECORDS.clear()
    _LOADED = True
    if _truthy(os.environ.get(ENV_DISABLE_ALL)):
        return []
    disabled = {n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip()}
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        rec = PluginRecord(
            name=ep.name,
            target=ep.value,
            distribution=getattr(dist, "name", None) or "?",
            version=getattr(dist, "version", None) or "?",
        )
        _RECORDS[ep.name] = rec
        if ep.name in disabled or rec.distribution in disabled:
            rec.status = "disabled"
            continue
        before = _snapshot()
        try:
            obj = ep.load()
            if callable(obj) and ep.attr:
                obj()
        except BaseException as e:  # noqa: BLE001 - a plugin must never take the host down
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            _rollback(before)
            rec.status = "failed"
            rec.error = f"{type(e).__name__}: {e}".strip()
            rec.traceback = traceback.format_exc()  # type: ignore[attr-defined]
            continue
        after = _snapshot()
        rec.registered = sorted((kind, n) for kind in KINDS for n in after[kind] - before[kind])
        for key in rec.registered:
            ORIGINS[key] = rec
        rec.status = "loaded"
    records = list(_RECORDS.values())
    if strict:
        _raise_if_failed(records)
    return records


def _raise_if_failed(records: list[PluginRecord]) -> None:
    failed = [r for r in records if r.status == "failed"]
    if failed:
        raise PluginError(
            "plugin(s) failed to load: "
            + "; ".join(f"{r.name} ({r.label}): {r.error}" for r in failed)
        )


def plugin_records() -> list[PluginRecord]:
    return list(_RECORDS.values())


def origin(kind: str, name: str) -> str:
    """'built-in' or 'plugin <name> (<distribution> <version>)' for a registered part."""
    rec = ORIGINS.get((kind, name))
    return "built-in" if rec is None else f"plugin {rec.name} ({rec.label})"

"""Documentation pages generated from the code (the MkDocs hooks in ``docs/hooks.py`` call these at build time).

Nothing here is hand-maintained: the component reference walks the registries, the recipe reference reads and
builds every recipe (on the meta device: shapes only), and the architecture diagram reads the generic model's
slots (``build(kind, cfg, slot)`` calls in :mod:`thkit.models.talking_head`).
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

__all__ = ["architecture_mermaid", "benchmarks_page", "component_rows", "components_page", "methods_index",
           "metrics_page", "recipe_rows", "recipes_page"]

ROOT = Path(__file__).resolve().parent.parent


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _args_table(args: list[tuple[str, str, str]]) -> list[str]:
    """A Markdown table of constructor arguments ``(name, type, default)`` ('' default: required)."""
    if not args:
        return []
    rows = [f"| `{n}` | `{_md(t)}` | `{_md(d)}` |" if d else f"| `{n}` | `{_md(t)}` | required |" for n, t, d in args]
    return ["| argument | type | default |", "|---|---|---|", *rows, ""]


def component_rows() -> list[dict[str, Any]]:
    """One row per registered part: kind, name, docstring, arguments ``(name, type, default)``, origin."""
    from thkit.plugins import load_plugins, origin
    from thkit.registry import KINDS

    load_plugins()
    rows = []
    for kind, k in KINDS.items():
        for name in sorted(k.registry.module_dict):
            obj = k.registry.module_dict[name]
            try:
                params = list(inspect.signature(obj).parameters.values())
            except (TypeError, ValueError):
                params = []
            args = [(p.name, _type_name(p.annotation), "" if p.default is p.empty else repr(p.default))
                    for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            rows.append(dict(kind=kind, description=k.description, name=name, doc=inspect.getdoc(obj) or "",
                             args=args, origin=origin(kind, name)))
    return rows


def components_page() -> str:
    rows = component_rows()
    out = ["# Component reference", "",
           "Generated from the registries when the documentation is built (`thkit list` prints the same names). "
           "Every part is built from a recipe as `dict(type=NAME, **arguments)`.", ""]
    kind = None
    for r in rows:
        if r["kind"] != kind:
            kind = r["kind"]
            out += [f"## {kind}", "", r["description"].capitalize() + ".", ""]
        doc = r["doc"].split("\n\n")[0].replace("\n", " ")
        out += [f"### `{r['name']}`", "", f"*{r['origin']}*", "", doc, ""] + _args_table(r["args"])
    return "\n".join(out) + "\n"


def metrics_page() -> str:
    """Each registered metric with its whole docstring (definition, convention, backends, paper-exactness) and
    its arguments: the evaluation reference."""
    out = ["# Metrics", "",
           "Generated from the `metric` registry when the documentation is built. `thkit eval --metrics NAME[:k=v]` "
           "picks metrics and their arguments (e.g. `AKD:backend=mediapipe`); each result in the JSON report "
           "carries its `backend`, `paper_exact` flag and `convention`. thkit never downloads metric weights: a "
           "metric whose weights file is missing is listed as a note (or is an error when named).", ""]
    for r in component_rows():
        if r["kind"] != "metric":
            continue
        out += [f"## {r['name']}", "", r["doc"], ""] + _args_table(r["args"])
    return "\n".join(out) + "\n"


def _bases(path: Path) -> list[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_base_" for t in node.targets):
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def recipe_rows() -> list[dict[str, Any]]:
    """Every recipe: name, first comment line, bases, origin, parameter count of its model (built on the meta
    device) or the error that building it raised."""
    import torch

    from thkit.api import create_model
    from thkit.recipe import recipe_index, recipe_summary

    rows = []
    for name, (path, where) in sorted(recipe_index().items()):
        try:
            with torch.device("meta"):
                model = create_model(name)
            params = f"{sum(p.numel() for p in model.parameters()):,}"
        except Exception as e:  # noqa: BLE001 - the page shows what a user would see
            params = f"does not build: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        rows.append(dict(name=name, summary=recipe_summary(path), bases=_bases(path), origin=where, params=params))
    return rows


def recipes_page() -> str:
    out = ["# Recipe reference", "",
           "Generated when the documentation is built: every recipe (`thkit list --recipes`), its first comment "
           "line, the recipes it builds on and the parameter count of its model.", "",
           "| recipe | what it is | bases | parameters | origin |", "|---|---|---|---:|---|"]
    for r in recipe_rows():
        bases = ", ".join(f"`{b}`" for b in r["bases"]) or "—"
        out.append(f"| `{r['name']}` | {_md(r['summary'])} | {bases} | {_md(r['params'])} | {_md(r['origin'])} |")
    return "\n".join(out) + "\n"


def benchmarks_page() -> str:
    """``benchmarks/README.md`` (the latest figures, the machine's load, how to rerun each script)."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    return text + "\n\n*This page is `benchmarks/README.md`; the scripts are in `benchmarks/`.*\n"


def methods_index(folder: Path) -> str:
    out = ["# Methods", "", "One page per method: the paper, which thkit part is which, the recipes, parity with the "
           "official code, and what is not reproduced.", ""]
    for p in sorted(Path(folder).glob("*.md")):
        if p.name == "index.md":
            continue
        title = next((ln.lstrip("# ").strip() for ln in p.read_text().splitlines() if ln.startswith("# ")), p.stem)
        out.append(f"* [{title}]({p.name})")
    return "\n".join(out) + "\n"


def model_slots() -> list[tuple[str, str]]:
    """``(slot, kind)`` of the generic model, in the order its constructor builds them (read from the code)."""
    from thkit.models import talking_head

    tree = ast.parse(Path(talking_head.__file__).read_text())
    slots = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "build" and len(node.args) >= 3:
            kind, slot = node.args[0], node.args[2]
            if isinstance(kind, ast.Constant) and isinstance(slot, ast.Constant):
                slots.append((slot.value, kind.value))
    return slots


def architecture_mermaid() -> str:
    """A Mermaid graph of the data flow source/driving -> keypoints -> motion -> warp -> compensate -> decode, each
    slot labelled with its registry kind and how many parts that kind holds."""
    from thkit.registry import KINDS, import_builtins

    import_builtins()
    slots = dict(model_slots())
    missing = {"keypoint_detector", "motion", "encoder", "warper", "compensator", "decoder"} - set(slots)
    if missing:
        raise RuntimeError(f"the generic model no longer builds {', '.join(sorted(missing))}: update thkit.docgen")

    def node(slot: str) -> str:
        kind = slots[slot]
        n = len(KINDS[kind].registry.module_dict)
        return f'{slot}["{slot}<br/><i>kind {kind}: {n} registered</i>"]'

    lines = ["```mermaid", "flowchart LR",
             '  src(["source image"]) --> ' + node("keypoint_detector"),
             '  drv(["driving frame"]) --> keypoint_detector',
             "  keypoint_detector -- keypoints --> " + node("motion"),
             "  src --> motion",
             "  src --> " + node("encoder"),
             "  encoder -- features --> " + node("warper"),
             "  motion -- flow, occlusion --> warper",
             "  warper -- warped features --> " + node("compensator"),
             "  compensator -- compensated features --> " + node("decoder"),
             '  decoder --> pred(["prediction"])',
             "```"]
    return "\n".join(lines)

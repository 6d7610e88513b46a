"""The documentation cannot rot: every command and snippet in README.md and docs/ is run (or marked as not run,
with the reason beside it), the generated reference pages cover every registered part and recipe, and every
registered part has a docstring and typed constructor arguments (what the component reference shows).

Markers, an HTML comment on the line before a fenced block (invisible on the site and on GitHub):

* ``<!-- docs-test: run -->``: ``bash`` blocks run line by line (``thkit`` is the installed command), ``python``
  blocks run as a script, ``console`` blocks (``$ command`` then its output) run each command and check that
  every output line shown appears in what it printed (lines with timings excepted);
* ``<!-- docs-test: excerpt PATH -->``: every line shown (but ``...``) is a line of that file;
* ``<!-- docs-test: skip: REASON -->``: not run, for the reason given.

Blocks that show output only (no language, not starting with ``thkit`` or ``$``) need no marker.
"""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

FENCE = re.compile(r"^[ \t]*```(?P<lang>[\w-]*)\n(?P<body>.*?)^[ \t]*```", re.S | re.M)
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<what>run|excerpt|skip)\b:?\s*(?P<arg>.*?)\s*-->\s*$")
COMMAND_LANGS = {"bash", "sh", "shell", "console", "python", "py"}
BOX = re.compile(r"[│┃┏┓┗┛━┳┻╇┡┩└┘┴┬─╋┼═]+")


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks() -> list[dict]:
    """Every fenced block that shows a command or a snippet, with its marker (or None)."""
    found = []
    for path in _doc_files():
        text = path.read_text()
        for m in FENCE.finditer(text):
            lang, body = m.group("lang"), textwrap.dedent(m.group("body"))
            first = body.lstrip().splitlines()[0] if body.strip() else ""
            if lang not in COMMAND_LANGS and not first.startswith(("thkit ", "$ ")):
                continue
            before = text[: m.start()].rstrip("\n").splitlines()
            marker = MARKER.search(before[-1]) if before else None
            line = text[: m.start()].count("\n") + 1
            found.append(dict(where=f"{path.relative_to(ROOT)}:{line}", lang=lang, body=body,
                              what=marker and marker.group("what"), arg=marker and marker.group("arg")))
    return found


BLOCKS = blocks()


def test_every_command_block_is_run_or_says_why_not():
    unmarked = [b["where"] for b in BLOCKS if b["what"] is None]
    assert not unmarked, ("blocks with no docs-test marker (run / excerpt PATH / skip: reason): "
                          + ", ".join(unmarked))
    no_reason = [b["where"] for b in BLOCKS if b["what"] == "skip" and len(b["arg"]) < 10]
    assert not no_reason, f"skipped without a reason: {no_reason}"
    assert sum(b["what"] == "run" for b in BLOCKS) >= 5


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("THKIT_TESTING", "1")
    return env


def _commands(body: str) -> list[str]:
    """Shell lines of a block (continuations joined, comments and blank lines dropped)."""
    out, cur = [], ""
    for raw in body.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        line = (cur + line).strip()
        cur = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _local(cmd: str) -> str:
    """`.venv/bin/thkit` and `.venv/bin/python` of the docs are this environment's."""
    bindir = str(Path(sys.executable).parent)
    return re.sub(r"(?<![\w/])\.venv/bin/", bindir + "/", cmd)


def _norm(line: str) -> str:
    return " ".join(BOX.sub(" ", line).split())


@pytest.mark.parametrize("block", [b for b in BLOCKS if b["what"] == "run"], ids=lambda b: b["where"])
def test_run_block(block, tmp_path):
    body = block["body"]
    if block["lang"] in ("python", "py"):
        r = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{block['where']}: {r.stderr[-2000:]}"
        return
    if block["lang"] == "console" or body.lstrip().startswith("$ "):
        runs: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                runs.append((line[2:], []))
            elif runs:
                runs[-1][1].append(line)
        assert runs, f"{block['where']}: a console block without a `$ command` line"
        for cmd, expected in runs:
            r = subprocess.run(_local(cmd), shell=True, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                               timeout=600)
            printed = [_norm(x) for x in (r.stdout + r.stderr).splitlines()]
            for want in expected:
                w = _norm(want)
                if not w or w == "..." or re.search(r"\d ms\b|frames/s|\bin [\d.]+ ?s\b", w):
                    continue
                # "..." in a shown line stands for text left out
                pattern = re.compile(".*?".join(re.escape(part) for part in w.split("...")))
                assert any(pattern.fullmatch(p) for p in printed), (
                    f"{block['where']}: `{cmd}` no longer prints: {want.strip()}\n{r.stderr[-500:]}")
        return
    for cmd in _commands(body):
        r = subprocess.run(_local(cmd), shell=True, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{block['where']}: `{cmd}` failed: {r.stderr[-2000:]}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b["what"] == "excerpt"], ids=lambda b: b["where"])
def test_excerpt_block(block):
    source = ROOT / block["arg"]
    assert source.is_file(), f"{block['where']}: {block['arg']} does not exist"
    lines = {ln.strip() for ln in source.read_text().splitlines()}
    for shown in block["body"].splitlines():
        s = shown.strip()
        if s and s != "..." and s != f"# {block['arg']}":  # a first line may name the file
            assert s in lines, f"{block['where']}: {block['arg']} no longer has the line: {s}"


def test_every_registered_part_is_documented():
    """The component reference shows each part's docstring and typed constructor arguments."""
    from thkit.docgen import component_rows

    rows = component_rows()
    assert len(rows) > 40
    assert not [f"{r['kind']}:{r['name']}" for r in rows if not r["doc"].strip()], "parts without a docstring"
    untyped = [f"{r['kind']}:{r['name']}({n})" for r in rows for n, t, _ in r["args"] if not t]
    assert not untyped, f"constructor arguments without a type: {untyped}"


def test_generated_reference_pages():
    from thkit.docgen import architecture_mermaid, components_page, metrics_page, model_slots, recipes_page
    from thkit.recipe import recipe_index
    from thkit.registry import KINDS

    page = components_page()
    for kind, k in KINDS.items():
        assert f"## {kind}" in page
        for name in k.registry.module_dict:
            assert f"### `{name}`" in page
    recipes = recipes_page()
    for name in recipe_index():
        assert f"| `{name}` |" in recipes
    assert "does not build" not in recipes
    assert "| `fomm/vox256` |" in recipes and "| 59,790,759 |" in recipes
    assert dict(model_slots())["motion"] == "motion" and "kind compensator" in architecture_mermaid()
    metrics = metrics_page()
    for name in KINDS["metric"].registry.module_dict:
        assert f"## {name}" in metrics


def test_docstring_and_type_check_would_fail(monkeypatch):
    """The reference test above sees a part that lost its docstring or an argument's type."""
    from thkit.docgen import component_rows
    from thkit.registry import WARPERS

    class Bare:  # noqa: D401 - deliberately undocumented
        def __init__(self, x, y: int = 1):
            pass

    Bare.__doc__ = None
    WARPERS.register_module(name="BareTestWarper", module=Bare)
    try:
        row = next(r for r in component_rows() if r["name"] == "BareTestWarper")
        assert row["doc"] == "" and row["args"][0] == ("x", "", "") and row["args"][1][1] == "int"
    finally:
        del WARPERS._module_dict["BareTestWarper"]
    assert inspect.getdoc(Bare) is None

"""MkDocs hooks: pages generated from the code at build time, so they cannot fall out of date.

* ``reference/components.md``: every registered part by kind (registered name, docstring, constructor arguments
  with types and defaults, origin: built-in or the plugin that registered it);
* ``reference/recipes.md``: every recipe with its first comment line, its bases and its parameter count;
* ``reference/metrics.md``: every metric's definition, convention, backends and arguments;
* ``benchmarks.md``: ``benchmarks/README.md``, the latest figures and how to rerun them;
* ``methods/index.md``: the list of ``docs/methods/*.md`` pages;
* the architecture diagram (a Mermaid graph of the generic model's slots and the registry kind of each).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def on_files(files, config):
    from mkdocs.structure.files import File

    from thkit.docgen import benchmarks_page, components_page, methods_index, metrics_page, recipes_page

    pages = {
        "reference/components.md": components_page(),
        "reference/recipes.md": recipes_page(),
        "reference/metrics.md": metrics_page(),
        "benchmarks.md": benchmarks_page(),
        "methods/index.md": methods_index(Path(config["docs_dir"]) / "methods"),
    }
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    if "<!-- architecture-diagram -->" in markdown:
        from thkit.docgen import architecture_mermaid

        markdown = markdown.replace("<!-- architecture-diagram -->", architecture_mermaid())
    return markdown

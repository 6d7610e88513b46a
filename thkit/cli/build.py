"""The ``thkit`` command line.

Commands: ``build`` (build a recipe, print its component tree, run one forward pass), ``list`` (registered
components by kind), ``plugins`` (installed plugins and what they registered), ``convert`` (official
checkpoints to thkit checkpoints).  Errors a user can make end with a one-line message and a non-zero exit
code; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _cfg_options_action():
    from mmengine.config import DictAction

    return DictAction


def _console():
    """A rich console; when output is not a terminal, wide enough that tables are never truncated."""
    import sys

    from rich.console import Console

    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=True, width=width)


def _esc(text: Any) -> str:
    from rich.markup import escape

    return escape(str(text))


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def component_rows(model, root: str = "model") -> list[dict[str, Any]]:
    """One row per built part inside ``model``: recipe path, kind, registered name, parameters, origin."""
    from thkit.plugins import origin

    rows = []
    for name, mod in model.named_modules():
        kind = getattr(mod, "_thkit_kind", None)
        if kind is None:
            continue
        path = getattr(mod, "_thkit_path", None) or (f"{root}.{name}" if name else root)
        tname = getattr(mod, "_thkit_type", type(mod).__name__)
        rows.append(
            dict(path=path, kind=kind, type=tname, params=_count(mod), origin=origin(kind, tname),
                 depth=path.count("."))
        )
    return rows


def _print_tree(console, rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("part (recipe path)")
    table.add_column("kind")
    table.add_column("registered name")
    table.add_column("parameters", justify="right")
    table.add_column("origin")
    for r in rows:
        indent = "  " * max(0, r["depth"] - 1)
        table.add_row(_esc(indent + r["path"]), r["kind"], _esc(r["type"]), f"{r['params']:,}", _esc(r["origin"]))
    console.print(table)


def _shapes(out: Any, prefix: str = "") -> list[tuple[str, str]]:
    import torch

    res = []
    if isinstance(out, torch.Tensor):
        res.append((prefix, "x".join(map(str, out.shape))))
    elif isinstance(out, dict):
        for k, v in out.items():
            res.extend(_shapes(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(out, (list, tuple)):
        for i, v in enumerate(out):
            res.extend(_shapes(v, f"{prefix}[{i}]"))
    return res


# --------------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------------
def cmd_build(args) -> int:
    import torch

    from thkit.builder import build, build_model
    from thkit.plugins import load_plugins
    from thkit.recipe import load_recipe

    console = _console()
    cfg = load_recipe(args.recipe, args.cfg_options, size=args.size)
    load_plugins(strict=args.strict_plugins)
    if args.dump:
        cfg.dump(args.dump)
        console.print(f"resolved recipe written to {args.dump}")
    model = build_model(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model)
    rows = component_rows(model)
    extra = {}
    for key, kind in (("discriminator", "discriminator"),):
        if cfg.get(key):
            net = build(kind, cfg[key].to_dict() if hasattr(cfg[key], "to_dict") else cfg[key], path=key)
            extra[key] = net
            rows += component_rows(net, key)
    if args.checkpoint:
        from thkit.checkpoint import load_into

        load_into(model, args.checkpoint, fmt=args.checkpoint_format, trusted=args.trusted, extra=extra)
        console.print(f"loaded weights from {args.checkpoint}")
    _print_tree(console, rows, f"{args.recipe}")
    total = _count(model)
    console.print(f"model parameters: {total:,}" + "".join(f"; {k}: {_count(v):,}" for k, v in extra.items()))

    size = args.size or int(cfg.get("image_size", 256))
    lo, hi = cfg.model.get("input_range", (0.0, 1.0)) if hasattr(cfg.model, "get") else (0.0, 1.0)
    gen = torch.Generator().manual_seed(0)
    channels = int(cfg.get("num_channels", 3))
    shape = (args.batch, channels, size, size)
    source = torch.rand(shape, generator=gen) * (hi - lo) + lo
    driving = torch.rand(shape, generator=gen) * (hi - lo) + lo
    model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(source, driving)
        dt = time.perf_counter() - t0
    console.print(f"forward pass on random {args.batch}x{channels}x{size}x{size} input in [{lo:g}, {hi:g}]: {dt * 1000:.1f} ms")
    for k, s in _shapes(out):
        if args.all_outputs or k.split(".")[0].split("[")[0] in ("prediction", "deformation", "occlusion_map", "deformed"):
            console.print(f"  {k}: {s}")
    for key, net in extra.items():
        net.eval()
        with torch.inference_mode():
            try:
                d = net(out["prediction"], kp=out.get("kp_driving"))
            except TypeError:
                d = net(out["prediction"])
        for k, s in _shapes(d, key):
            if args.all_outputs or "prediction" in k:
                console.print(f"  {k}: {s}")
    return 0


def cmd_list(args) -> int:
    from thkit.plugins import load_plugins, origin
    from thkit.registry import KINDS, kind_of

    load_plugins()
    console = _console()
    kinds = [kind_of(args.kind)] if args.kind else list(KINDS.values())
    for k in kinds:
        names = sorted(k.registry.module_dict)
        console.print(f"[bold]{k.name}[/bold] ({k.description}): {len(names)}")
        for n in names:
            obj = k.registry.module_dict[n]
            doc = (obj.__doc__ or "").strip().splitlines()
            line = doc[0] if doc else ""
            src = origin(k.name, n)
            console.print(_esc(f"  {n:<32} {line}" + ("" if src == "built-in" else f"  [{src}]")))
    return 0


def cmd_plugins(args) -> int:
    from rich.table import Table

    from thkit.plugins import ENV_DISABLE_ALL, load_plugins

    import os

    console = _console()
    if os.environ.get(ENV_DISABLE_ALL, "").strip().lower() in ("1", "true", "yes", "on"):
        console.print(f"plugin loading is disabled ({ENV_DISABLE_ALL} is set)")
        return 0
    records = load_plugins(strict=False)
    if not records:
        console.print("no plugins installed (entry-point group 'thkit.plugins')")
    else:
        table = Table(title="thkit plugins")
        for col in ("plugin", "distribution", "version", "status", "registered / error"):
            table.add_column(col)
        for r in records:
            what = ", ".join(f"{k}:{n}" for k, n in r.registered) if r.status == "loaded" else r.error
            table.add_row(_esc(r.name), _esc(r.distribution), _esc(r.version), r.status, _esc(what))
        console.print(table)
    failed = [r for r in records if r.status == "failed"]
    if failed and args.strict:
        for r in failed:
            print(f"error: plugin {r.name} ({r.label}) failed to load: {r.error}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def cmd_convert(args) -> int:
    from thkit.checkpoint import convert_file

    opts = {"use_ema": False} if args.no_ema else {}
    out = convert_file(args.source, args.output, method=args.from_, trusted=args.trusted, **opts)
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------------------------------------
# parser and entry point
# --------------------------------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thkit",
        description="thkit: one-shot talking-head generation from registered, swappable components.",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser("build", help="build a recipe, print its component tree and run one forward pass",
                       description="Build the model of RECIPE, print every part (registered name, parameter count, "
                                   "origin), run one forward pass on random input and print output shapes and time.")
    b.add_argument("recipe", help="recipe file (or a name under recipes/, e.g. fomm/vox256)")
    b.add_argument("--cfg-options", nargs="+", action=_cfg_options_action(), metavar="KEY=VALUE",
                   help="override recipe values, e.g. model.motion.num_kp=15")
    b.add_argument("--size", type=int, default=None,
                   help="build the recipe for this input size (SMAC's token grid follows) and run the test forward "
                        "pass at it (default: recipe image_size)")
    b.add_argument("--batch", type=int, default=1, help="batch size of the test forward pass")
    b.add_argument("--dump", metavar="FILE", help="write the resolved recipe (bases merged, overrides applied)")
    b.add_argument("--checkpoint", metavar="FILE", help="load weights (a thkit checkpoint or an official one)")
    b.add_argument("--checkpoint-format", default="auto", help="format of --checkpoint: auto, thkit, fomm, tpsmm, ...")
    b.add_argument("--trusted", action="store_true", help="allow unpickling arbitrary objects from --checkpoint")
    b.add_argument("--strict-plugins", action="store_true", help="fail if any plugin fails to load")
    b.add_argument("--all-outputs", action="store_true", help="print the shape of every output, not just the main ones")
    b.set_defaults(func=cmd_build)

    ls = sub.add_parser("list", help="list registered components by kind",
                        description="List registered components, with a one-line description each.")
    ls.add_argument("kind", nargs="?", help="only this kind (keypoint, motion, warper, encoder, codebook, ...)")
    ls.set_defaults(func=cmd_list)

    pl = sub.add_parser("plugins", help="list installed plugins, their status and what they registered",
                        description="List plugins of the 'thkit.plugins' entry-point group. "
                                    "THKIT_NO_PLUGINS=1 disables loading; THKIT_DISABLE_PLUGINS=a,b skips some.")
    pl.add_argument("--strict", action="store_true", help="exit non-zero if any plugin failed to load")
    pl.set_defaults(func=cmd_plugins)

    cv = sub.add_parser("convert", help="convert an official checkpoint into a thkit checkpoint",
                        description="Convert official checkpoint file(s) into a thkit checkpoint (weights only).")
    cv.add_argument("source", nargs="+", help="official checkpoint file(s)")
    cv.add_argument("--from", dest="from_", required=True, help="method of the official checkpoint (fomm, tpsmm, smac, ...)")
    cv.add_argument("-o", "--output", required=True, help="output thkit checkpoint")
    cv.add_argument("--trusted", action="store_true", help="allow unpickling arbitrary objects (legacy files you trust)")
    cv.add_argument("--no-ema", action="store_true", help="SMAC: take 'params' instead of the EMA weights 'params_ema'")
    cv.set_defaults(func=cmd_convert)

    _add_extra_commands(sub)
    return p


def _add_extra_commands(sub) -> None:
    """Commands contributed by other modules (training, inference, data) when they exist."""
    import importlib

    for mod_name in ("thkit.engine.cli", "thkit.inference.cli", "thkit.datasets.cli"):
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and mod_name.startswith(e.name):
                continue
            raise
        mod.add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from thkit.errors import ThkitError

    try:
        return int(args.func(args) or 0)
    except ThkitError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

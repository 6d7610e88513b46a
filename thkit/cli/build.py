"""``thkit build``, ``list``, ``plugins``, ``convert``."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from thkit.cli._common import EXIT_FAILURE, add_cfg_options, console, esc


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
        rows.append(dict(path=path, kind=kind, type=tname, params=_count(mod), origin=origin(kind, tname),
                         depth=path.count(".")))
    return rows


def _print_tree(con, rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("part (recipe path)", "kind", "registered name"):
        table.add_column(col)
    table.add_column("parameters", justify="right")
    table.add_column("origin")
    for r in rows:
        indent = "  " * max(0, r["depth"] - 1)
        table.add_row(esc(indent + r["path"]), r["kind"], esc(r["type"]), f"{r['params']:,}", esc(r["origin"]))
    con.print(table)


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


def cmd_build(args) -> int:
    import torch

    from thkit.api import create_model, load_recipe
    from thkit.interfaces import discriminate
    from thkit.plugins import load_plugins
    from thkit.value_range import from_unit

    con = console()
    load_plugins(strict=args.strict_plugins)
    target = args.recipe if args.recipe is not None else args.checkpoint
    if target is None:
        from thkit.errors import RecipeError

        raise RecipeError("", "thkit build needs a RECIPE (name or file) or --checkpoint MODEL_FOLDER")
    checkpoint = args.checkpoint if args.recipe is not None else None
    if args.dump:
        load_recipe(target, args.cfg_options, size=args.size).dump(args.dump)
        con.print(f"resolved recipe written to {args.dump}")
    model = create_model(target, size=args.size, checkpoint=checkpoint, cfg_options=args.cfg_options,
                         checkpoint_format=args.checkpoint_format, trusted=args.trusted, extra=("discriminator",))
    extra = getattr(model, "extra", {})
    rows = component_rows(model)
    for key, net in extra.items():
        rows += component_rows(net, key)
    if model.meta["weights"]:
        con.print(f"loaded weights from {model.meta['weights']}")
    _print_tree(con, rows, f"{target}")
    con.print(f"model parameters: {_count(model):,}" + "".join(f"; {k}: {_count(v):,}" for k, v in extra.items()))

    size = model.meta["image_size"]
    lo, hi = model.meta["input_range"]
    gen = torch.Generator().manual_seed(0)
    channels = int(model.recipe.get("num_channels", 3))
    shape = (args.batch, channels, size, size)
    source = from_unit(torch.rand(shape, generator=gen), (lo, hi))
    driving = from_unit(torch.rand(shape, generator=gen), (lo, hi))
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(source, driving)
        dt = time.perf_counter() - t0
    con.print(f"forward pass on random {args.batch}x{channels}x{size}x{size} input in [{lo:g}, {hi:g}]: "
              f"{dt * 1000:.1f} ms")
    main_outputs = ("prediction", "deformation", "occlusion_map", "deformed")
    for k, s in _shapes(out):
        if args.all_outputs or k.split(".")[0].split("[")[0] in main_outputs:
            con.print(f"  {k}: {s}")
    for key, net in extra.items():
        net.eval()
        with torch.inference_mode():
            d = discriminate(net, out["prediction"], out.get("kp_driving"))
        for k, s in _shapes(d, key):
            if args.all_outputs or "prediction" in k:
                con.print(f"  {k}: {s}")
    return 0


def cmd_list(args) -> int:
    from thkit.plugins import load_plugins, origin
    from thkit.registry import KINDS, kind_of

    load_plugins()
    con = console()
    if args.recipes:
        from thkit.recipe import recipe_index, recipe_summary

        index = recipe_index()
        con.print(f"[bold]recipes[/bold] (thkit build NAME, thkit.create_model(NAME)): {len(index)}")
        for name in sorted(index):
            path, where = index[name]
            con.print(esc(f"  {name:<28} {recipe_summary(path)}" + ("" if where == "built-in" else f"  [{where}]")))
        return 0
    kinds = [kind_of(args.kind)] if args.kind else list(KINDS.values())
    for k in kinds:
        names = sorted(k.registry.module_dict)
        con.print(f"[bold]{k.name}[/bold] ({k.description}): {len(names)}")
        for n in names:
            obj = k.registry.module_dict[n]
            doc = (obj.__doc__ or "").strip().splitlines()
            line = doc[0] if doc else ""
            src = origin(k.name, n)
            con.print(esc(f"  {n:<32} {line}" + ("" if src == "built-in" else f"  [{src}]")))
    return 0


def cmd_plugins(args) -> int:
    import os

    from rich.table import Table

    from thkit.plugins import ENV_DISABLE_ALL, load_plugins

    con = console()
    if os.environ.get(ENV_DISABLE_ALL, "").strip().lower() in ("1", "true", "yes", "on"):
        con.print(f"plugin loading is disabled ({ENV_DISABLE_ALL} is set)")
        return 0
    records = load_plugins(strict=False)
    if not records:
        con.print("no plugins installed (entry-point group 'thkit.plugins')")
    else:
        table = Table(title="thkit plugins")
        for col in ("plugin", "distribution", "version", "status", "registered / error"):
            table.add_column(col)
        for r in records:
            what = ", ".join(f"{k}:{n}" for k, n in r.registered) if r.status == "loaded" else r.error
            table.add_row(esc(r.name), esc(r.distribution), esc(r.version), r.status, esc(what))
        con.print(table)
    failed = [r for r in records if r.status == "failed"]
    if failed and args.strict:
        for r in failed:
            print(f"error: plugin {r.name} ({r.label}) failed to load: {r.error}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def cmd_convert(args) -> int:
    from pathlib import Path

    opts = {"use_ema": False} if args.no_ema else {}
    out = Path(args.output)
    if out.suffix in (".pth", ".pt", ".tar"):
        from thkit.checkpoint import convert_file

        if args.config or args.recipe:
            from thkit.errors import RecipeError

            raise RecipeError("", f"-o {out} is a single checkpoint file; --config/--recipe go with a model folder "
                                  f"(-o FOLDER/)")
        path = convert_file(args.source, out, method=args.from_, trusted=args.trusted, **opts)
        print(f"wrote {path} (a thkit checkpoint; -o FOLDER/ with --config or --recipe writes a model folder)")
        return 0
    from thkit.api import convert_checkpoint

    path = convert_checkpoint(args.source, out, method=args.from_, config=args.config, recipe=args.recipe,
                   trusted=args.trusted, **opts)
    print(f"wrote model folder {path} (model.safetensors, recipe.json, meta.json); load it with "
          f"thkit.create_model('{path}') or --checkpoint {path}")
    return 0


def add_commands(sub) -> None:
    b = sub.add_parser("build", help="build a recipe, print its component tree and run one forward pass",
                       description="Build the model of RECIPE (or of a model folder given as --checkpoint), print "
                                   "every part (registered name, parameter count, origin), run one forward pass on "
                                   "random input and print output shapes and time.")
    b.add_argument("recipe", nargs="?", help="recipe name (thkit list --recipes), recipe file, or model folder")
    add_cfg_options(b)
    b.add_argument("--size", type=int, default=None,
                   help="build the recipe for this input size (parts that depend on it, e.g. SMAC's token grid, "
                        "follow) and run the test forward pass at it (default: recipe image_size)")
    b.add_argument("--batch", type=int, default=1, help="batch size of the test forward pass")
    b.add_argument("--dump", metavar="FILE", help="write the resolved recipe (bases merged, overrides applied)")
    b.add_argument("--checkpoint", metavar="PATH",
                   help="weights (a model folder, a thkit checkpoint or an official one); a model folder alone "
                        "needs no RECIPE")
    b.add_argument("--checkpoint-format", default="auto", help="format of --checkpoint: auto, thkit, or a converter")
    b.add_argument("--trusted", action="store_true", help="allow unpickling arbitrary objects from --checkpoint")
    b.add_argument("--strict-plugins", action="store_true", help="fail if any plugin fails to load")
    b.add_argument("--all-outputs", action="store_true", help="print the shape of every output, not just the main ones")
    b.set_defaults(func=cmd_build)

    ls = sub.add_parser("list", help="list registered components by kind, or the recipes",
                        description="List registered components with a one-line description each, or (--recipes) "
                                    "every recipe with its first comment line.")
    ls.add_argument("kind", nargs="?",
                    help="only this kind (keypoint, motion, warper, encoder, codebook, converter, ...)")
    ls.add_argument("--recipes", action="store_true", help="list the recipes (built-in and plugins') instead")
    ls.set_defaults(func=cmd_list)

    pl = sub.add_parser("plugins", help="list installed plugins, their status and what they registered",
                        description="List plugins of the 'thkit.plugins' entry-point group. "
                                    "THKIT_NO_PLUGINS=1 disables loading; THKIT_DISABLE_PLUGINS=a,b skips some.")
    pl.add_argument("--strict", action="store_true", help="exit non-zero if any plugin failed to load")
    pl.set_defaults(func=cmd_plugins)

    cv = sub.add_parser(
        "convert", help="convert official checkpoint(s) into a model folder (or a thkit checkpoint)",
        description="Convert official checkpoint file(s) into a model folder (model.safetensors, recipe.json, "
                    "meta.json) that loads with no recipe: the recipe comes from the official configuration "
                    "(--config, mapped by the method's converter) or a thkit recipe (--recipe).  With -o FILE.pth, "
                    "write a weights-only thkit checkpoint instead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cv.add_argument("source", nargs="+", help="official checkpoint file(s)")
    cv.add_argument("--from", dest="from_", default="auto",
                    help="method of the official checkpoint (a converter name: thkit list converter); auto detects it")
    cv.add_argument("-o", "--output", required=True, help="output model folder (or FILE.pth for a thkit checkpoint)")
    cv.add_argument("--config", metavar="YAML", help="the official configuration file (e.g. config/vox-256.yaml)")
    cv.add_argument("--recipe", help="a thkit recipe name or file instead of --config")
    cv.add_argument("--trusted", action="store_true",
                    help="allow unpickling arbitrary objects (legacy files you trust)")
    cv.add_argument("--no-ema", action="store_true", help="SMAC: take 'params' instead of the EMA weights 'params_ema'")
    cv.set_defaults(func=cmd_convert)


__all__ = ["add_commands", "component_rows"]

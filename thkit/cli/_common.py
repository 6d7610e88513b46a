"""What the commands share: the console, ``--cfg-options``, the model arguments, threads and batch size."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


def console():
    """A rich console; when output is not a terminal, wide enough that tables are never truncated."""
    import sys

    from rich.console import Console

    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=True, width=width)


def esc(text: Any) -> str:
    from rich.markup import escape

    return escape(str(text))


def add_cfg_options(p: argparse.ArgumentParser, help: str = "override recipe values, e.g. model.motion.num_kp=15"):
    from mmengine.config import DictAction

    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help=help)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --random-weights, --checkpoint-format, --trusted, --cfg-options, --device, --batch-size,
    --threads, --no-progress."""
    p.add_argument("--checkpoint", metavar="PATH",
                   help="weights: a model folder (its recipe and size come with it), a thkit checkpoint, or an "
                        "official one (its method detected by the registered converters)")
    p.add_argument("--random-weights", action="store_true",
                   help="run an untrained model (smoke tests only; the output is meaningless)")
    p.add_argument("--checkpoint-format", default="auto",
                   help="format of --checkpoint: auto, thkit, or a converter name (thkit list converter)")
    p.add_argument("--trusted", action="store_true", help="allow unpickling arbitrary objects from --checkpoint")
    add_cfg_options(p, "override recipe values")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="driving frames per forward pass (default: 1 on CPU, where batching does not pay and "
                        "batch 1 is bit-identical to the per-frame forward; 8 on CUDA; see benchmarks/animate.py)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's choice; 1 is often faster on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def set_threads(args) -> None:
    if getattr(args, "threads", None) is not None:
        import torch

        from thkit.inference.errors import InferenceError

        if args.threads < 1:
            raise InferenceError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def batch_size(args, device) -> int:
    from thkit.inference.stream import resolve_batch_size

    return resolve_batch_size(args.batch_size, device)


def load_model(recipe, checkpoint=None,
               random_weights: bool = False, checkpoint_format: str = "auto", trusted: bool = False,
               cfg_options: dict | None = None, device="cpu", seed: int = 0,
               size: int | None = None):
    """:func:`thkit.api.create_model` for the commands: a recipe (or a model folder as ``recipe`` or
    ``checkpoint``) with weights, in eval mode.  Returns ``(model, cfg)``.

    Without a checkpoint (and not a model folder), ``random_weights=True`` must be given (smoke tests): a model
    is never silently left with random weights.
    """
    import torch

    from thkit.api import create_model
    from thkit.errors import CheckpointError, ThkitError
    from thkit.inference.errors import InferenceError, InputFileError
    from thkit.model_folder import is_model_folder

    if recipe is None:
        if checkpoint is None or not is_model_folder(checkpoint):
            raise InferenceError("no recipe: pass --recipe NAME, or --checkpoint with a model folder (which holds "
                                 "its recipe)")
        recipe, checkpoint = checkpoint, None
    folder = is_model_folder(recipe)
    if checkpoint is None and not random_weights and not folder:
        raise InferenceError("no weights: pass --checkpoint (a model folder, a thkit checkpoint or an official one), "
                             "or --random-weights for a smoke test with an untrained model")
    if (checkpoint is not None or folder) and random_weights:
        raise InferenceError("--checkpoint (or a model folder) and --random-weights exclude each other")
    if checkpoint is not None and not Path(checkpoint).exists():
        raise InputFileError(f"checkpoint {checkpoint} does not exist")
    torch.manual_seed(seed)
    try:
        model = create_model(recipe, size=size, checkpoint=checkpoint, cfg_options=cfg_options, device=device,
                             checkpoint_format=checkpoint_format, trusted=trusted)
    except ThkitError:
        raise
    except Exception as e:  # noqa: BLE001 - a converter tripping over a foreign file
        raise CheckpointError(f"checkpoint {checkpoint} does not fit recipe {recipe}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    return model, model.recipe

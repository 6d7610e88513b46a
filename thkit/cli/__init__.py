"""The ``thkit`` command line: the top floor of the package.

Nothing in thkit imports this package; each command parses its arguments and calls the library
(:mod:`thkit.api` for models).  Commands: ``build``, ``list``, ``plugins``, ``convert`` (:mod:`.build`),
``train`` (:mod:`.train`), ``animate``, ``eval``, ``demo`` (:mod:`.infer`), ``data`` (:mod:`.data`), ``export``
(:mod:`.export`), ``app`` (:mod:`.app`, the web app).  Errors a user can make end with a one-line message and exit
code 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from thkit.cli import app, build, data, export, infer, train
from thkit.cli._common import EXIT_FAILURE, EXIT_USER_ERROR

__all__ = ["EXIT_FAILURE", "EXIT_USER_ERROR", "main", "make_parser"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thkit",
        description="thkit: one-shot talking-head generation from registered, swappable components.",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in (build, train, infer, data, export, app):
        module.add_commands(sub)
    return p


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

"""`vitkit <command>`: the one command-line entry point.

Each module here registers one group of commands (``add_parser``) whose ``cmd_*`` functions turn arguments into a
call of the library. Expected failures -- bad input, a missing file, a check that did not pass -- are handled once,
in :func:`main`: one ``error:`` line on stderr and exit status 2. Anything else is a bug and keeps its traceback;
``VITKIT_DEBUG=1`` shows the traceback of an expected failure too.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys

from . import data, evaluate, infer, models, plan, train, viz

DEBUG_ENV = "VITKIT_DEBUG"
COMMAND_GROUPS = (models, train, evaluate, data, infer, plan, viz)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitkit", description="Vision Transformers on one GPU or a CPU")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(subparsers)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a user can cause and fix. Imported only when something failed, so `vitkit --help` stays fast.

    Bad input is a ValueError (ConfigError, BadImageError, DatasetLayoutError, UnknownModelError, viz's
    UnsupportedModelError); pickle.UnpicklingError covers the refusal to unpickle an unsafe CIFAR batch. A bare
    KeyError or TypeError is a bug and keeps its traceback.
    """
    from ..infer.export import ExportParityError
    from ..weights import WeightLoadError

    return FileNotFoundError, ValueError, ExportParityError, WeightLoadError, pickle.UnpicklingError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if os.environ.get(DEBUG_ENV) == "1" or not isinstance(err, expected_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]

"""`vitkit <command>`: the one command-line entry point.

Each module here registers one group of commands (``add_parser``) whose ``cmd_*`` functions turn arguments into a
call of the library. Expected failures -- bad input, a missing file, a path that cannot be written, a check that did
not pass -- are handled once, in :func:`main`: one ``error:`` line on stderr and exit status 2. Anything else is a
bug and keeps its traceback; ``--debug`` (or ``VITKIT_DEBUG=1``) shows the traceback of an expected failure too, and
warnings with their source lines (otherwise each is one ``warning:`` line, shown once).

Building the parser imports no torch (the command modules import the library inside their ``cmd_*`` functions,
and the choices they offer come from :mod:`vitkit.cli.choices`), so ``vitkit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings

from . import data, evaluate, infer, models, plan, train, viz
from .arguments import Parser, stdout_closed

DEBUG_ENV = "VITKIT_DEBUG"
COMMAND_GROUPS = (models, train, evaluate, data, infer, plan, viz)
DEBUG_HELP = f"show the traceback of an expected failure too (or set {DEBUG_ENV}=1)"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="vitkit", description="Vision Transformers on one GPU or a CPU")
    parser.add_argument("--version", action="version", version=f"vitkit {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for group in COMMAND_GROUPS:
        group.add_parser(subparsers)
    _add_to_subcommands(parser, "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _add_to_subcommands(parser: argparse.ArgumentParser, *flags: str, **kwargs) -> None:
    """Add one option to every subcommand, nested ones included, so it may follow the command's name. A SUPPRESS
    default keeps a subcommand from resetting what the top-level option set."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any(flag in sub._option_string_actions for flag in flags):
                    sub.add_argument(*flags, **kwargs)
                _add_to_subcommands(sub, *flags, **kwargs)


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a user can cause and fix. Imported only when something failed, so `vitkit --help` stays fast.

    Bad input is a ValueError (ConfigError, BadImageError, DatasetLayoutError, UnknownModelError, viz's
    UnsupportedModelError, ModelArgumentError); an OSError is a path that is missing, not writable, or a full disk;
    pickle.UnpicklingError covers the refusal to unpickle an unsafe CIFAR batch; a run whose loss became NaN or
    infinite (a learning rate far too high, most often) says at which step and where its state was saved. A bare
    KeyError or TypeError is a bug and keeps its traceback.
    """
    from ..infer.export import ExportParityError
    from ..train.engine import NonFiniteLossError
    from ..weights import WeightLoadError

    return OSError, ValueError, ExportParityError, WeightLoadError, NonFiniteLossError, pickle.UnpicklingError


def describe(err: BaseException) -> str:
    """The one line printed for an expected failure: an OSError names its file first (its str() is
    ``[Errno 20] Not a directory: 'x'``); anything else is its own message."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        target = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
        return f"{target}: {err.strerror}"
    return str(err) or type(err).__name__


def one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the commands: each warning once, as one ``warning:`` line (what a user needs to
    know, not the library's source line); deduplicated by text because the data loaders re-emit theirs for every
    split built from the same folder."""
    text = str(message)
    if text not in _shown:
        _shown.add(text)
        print(f"warning: {text}", file=file or sys.stderr)


_shown: set[str] = set()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed as one line
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 2
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV) == "1"
    previous = warnings.showwarning
    if not debug:
        _shown.clear()
        warnings.showwarning = one_line_warnings
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        return stdout_closed()
    except Exception as err:
        if debug or not isinstance(err, expected_errors()):
            raise
        print(f"error: {describe(err)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous  # main() called in-process (tests, a notebook) leaves warnings as it found them


__all__ = ["build_parser", "main"]

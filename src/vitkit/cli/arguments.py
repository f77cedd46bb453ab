"""What the commands share about their arguments: the parser class, its help format, value types, and the checks
of paths and devices that run before any work starts.

Every check here fails the way the command line's handler expects: a bad value given to argparse is one ``error:``
line from :meth:`Parser.error`; a bad path or device is a ValueError that :func:`vitkit.cli.main` prints as one
line. Nothing here imports torch at module level, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default. Options whose default is None or off say in words what happens
    by default (a test holds every option to it) and required ones have none; their help is left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = any(action.default is value for value in (None, False, argparse.SUPPRESS))  # `is`: 0 == False
        if "default" in text.lower() or action.required or unset:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {str(shown).replace('%', '%%')})".lstrip()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands share its help format and whose usage errors are one ``error:`` line
    naming the bad argument (argparse's own output is a usage block first), exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


# --- value types -----------------------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    """An integer >= 1 (a batch size, a count, a top-k)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker processes, warm-up calls)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def tcp_port(text: str) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return value


# --- paths -----------------------------------------------------------------------------------------------------------

def writable_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a folder this process can create or write into, or a ValueError naming ``what`` and the reason
    (a file in the way, no write permission, an empty name). Creates nothing."""
    if str(path).strip() == "":
        raise ValueError(f"{what} is empty; give a folder")
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {folder} is under the file {existing}, which cannot hold a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder}: {existing} is not writable")
    return folder


def writable_file(path: str | os.PathLike, what: str, *, force: bool = True,
                  inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """``path`` as a file this command may write: not empty, not a folder, never one of its ``inputs``, not an
    existing file unless ``force``, in a folder that can be written; else a ValueError naming ``what``."""
    if str(path).strip() == "":
        raise ValueError(f"{what} is empty; give a file name")
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{what} {target} is a folder; give a file name (e.g. {target / 'model.onnx'})")
    for source in inputs:
        if same_path(target, source):
            raise ValueError(f"{what} {target} is the input {source}; refusing to overwrite it")
    if target.exists() and not force:
        raise ValueError(f"{what} {target} already exists; pass --force to replace it")
    writable_folder(target.parent, f"{what} {target}: the folder")
    return target


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links and relative forms resolved)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as an existing file, or a FileNotFoundError naming ``what``."""
    found = Path(path).expanduser()
    if not found.is_file():
        reason = "is a folder, not a file" if found.is_dir() else "not found"
        raise FileNotFoundError(f"{what} {reason}: {found}")
    return found


# --- devices ---------------------------------------------------------------------------------------------------------

def inference_device(device: str, precision: str = "fp32") -> str:
    """The device predict, eval, bench and serve run on: 'auto' is CUDA where present, else the CPU, except for int8,
    whose dynamically quantized layers run on the CPU only. A device this machine lacks is a ValueError."""
    from ..runtime import resolve_device

    if device == "auto" and precision == "int8":
        return "cpu"
    return str(resolve_device(device))


def stdout_closed() -> int:
    """The reader of our stdout went away (``vitkit models --json | head``): stop quietly. Python would report the
    failed flush once more at exit, so stdout is pointed at /dev/null first."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing is flushed at exit
        pass
    finally:
        os.close(devnull)
    return 1


__all__ = [
    "HelpFormatter", "Parser", "positive_int", "non_negative_int", "positive_float", "tcp_port", "writable_folder",
    "writable_file", "same_path", "existing_file", "inference_device", "stdout_closed",
]

"""Crash-safe file writes: a reader sees the old file or the complete new one, never half of either.

A temporary file is named ``.<name>.<pid>.<random><suffix>`` beside its target, so a later process can tell the
leftovers of a killed writer (its pid is gone) from a write in progress, and remove them
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: ``.<name>.<pid>.<random>.tmp`` (atomic_path) and ``.<name>.<pid>.<random>.building.npy`` (the image cache)
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[^.]+\.(tmp|building\.npy)$")


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file, the free space, and that the old file is kept."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def temporary_beside(target: Path, suffix: str = ".tmp") -> Path:
    """A new empty file beside ``target`` whose name says which process made it (see the module docstring)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in ``directory`` left by writers that no longer run (killed mid-write); returns them.

    A temporary of a live process (a concurrent writer, or this one) is left alone.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _out_of_space(err: BaseException | None) -> bool:
    """Whether a failed write ran out of space: writers report it differently (OSError ENOSPC from Python's files,
    "No space left on device (os error 28)" inside safetensors' error, a recorded OSError for torch.save)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err) or "os error 28" in str(err):
            return True
        err = getattr(err, "recorded_os_error", None) or err.__cause__ or err.__context__
    return False


class RecordingWriter:
    """A binary file for ``torch.save`` that keeps the OSError of a failed write: torch's writer replaces it by a
    RuntimeError that does not say why, and a full disk must be told apart from a bug."""

    def __init__(self, fh) -> None:
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


@contextlib.contextmanager
def torch_save_target(tmp: Path) -> Iterator[RecordingWriter]:
    """Open ``tmp`` for ``torch.save`` so that a full disk surfaces as such (see RecordingWriter)."""
    with open(tmp, "wb") as fh:
        writer = RecordingWriter(fh)
        try:
            yield writer
        except Exception as err:
            if writer.error is not None:
                err.recorded_os_error = writer.error
            raise


def disk_full_message(path: Path) -> str:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return f"no space left on the device writing {path} ({free} on {path.parent}); the previous {path.name} is kept"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    The rename is atomic on POSIX filesystems, so a process killed mid-write leaves the previous file intact.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(target)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode an ordinary open() would
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except Exception as err:
            if _out_of_space(err):
                tmp.unlink(missing_ok=True)  # before measuring what is free
                raise DiskFullError(disk_full_message(target)) from err
            raise
        os.replace(tmp, target)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_weights_only(path: str | os.PathLike, what: str = "weights-only torch file"):
    """``torch.load(weights_only=True)`` with errors that name the file: never unpickles arbitrary objects."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False or add_safe_globals: advice that would run the payload
        raise ValueError(f"{path} holds objects that vitkit will not unpickle (a {what} holds only tensors, "
                         f"containers and numbers); it is not one vitkit wrote, or it was altered") from None
    except Exception as err:  # RuntimeError for truncated files, ...
        raise ValueError(f"{path} could not be read as a {what} ({err})") from None

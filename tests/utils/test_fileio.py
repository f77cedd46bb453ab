"""Atomic file writes: a failed writer leaves the old file and no temporaries."""

import os

import pytest

from vitkit.utils.fileio import atomic_path


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    with atomic_path(tmp_path / "g.bin") as tmp:
        tmp.write_bytes(b"new")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "g.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

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


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    from vitkit.utils.fileio import remove_stale_temporaries, temporary_beside

    dead = _dead_pid()
    stale = [tmp_path / f".last.pt.{dead}.k2j4h5.tmp", tmp_path / f".images.npy.{dead}.q1w2e3.building.npy"]
    for path in stale:
        path.write_bytes(b"x")
    live = temporary_beside(tmp_path / "summary.json")  # this process's own, as if mid-write
    other = tmp_path / ".hidden.txt"  # not a temporary at all
    other.write_text("keep")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert live.exists() and other.exists() and not any(p.exists() for p in stale)


def test_out_of_space_is_one_clear_error_and_keeps_the_old_file(tmp_path):
    import errno

    from vitkit.utils.fileio import DiskFullError

    target = tmp_path / "best.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(DiskFullError, match=r"no space left on the device writing .*best.safetensors \(.* MiB free"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]


def test_a_real_full_file_system_keeps_the_previous_checkpoint(tmp_path):
    """A 512 KiB tmpfs (needs root and mount(8); skipped elsewhere): a 4 MB training state does not fit."""
    import shutil
    import subprocess

    import torch

    from vitkit.train.checkpoint import load_train_state, save_train_state
    from vitkit.utils.fileio import DiskFullError

    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        save_train_state(mnt / "last.pt", {"step": torch.tensor(1)})
        with pytest.raises(DiskFullError, match=r"writing .*last.pt \(0\.[0-9] MiB free .*the previous last.pt is kept"):
            save_train_state(mnt / "last.pt", {"step": torch.tensor(2), "big": torch.zeros(1_000_000)})
        assert int(load_train_state(mnt / "last.pt")["step"]) == 1
        assert [p.name for p in mnt.iterdir()] == ["last.pt"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_a_tampered_state_is_refused_without_advice_that_would_run_it(tmp_path, monkeypatch):
    import torch

    from vitkit.train.checkpoint import load_train_state

    monkeypatch.chdir(tmp_path)
    torch.save({"version": 2, "step": 1, "evil": _Payload()}, tmp_path / "last.pt")
    with pytest.raises(ValueError) as err:
        load_train_state(tmp_path / "last.pt")
    message = str(err.value)
    assert "holds objects that vitkit will not unpickle" in message and str(tmp_path / "last.pt") in message
    assert "weights_only" not in message and "safe_globals" not in message and "\n" not in message
    assert not (tmp_path / "PWNED").exists()

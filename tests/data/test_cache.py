"""The decoded image cache: an entry is built whole, and what a killed build left behind is cleaned up."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vitkit.data.cache import open_entry, write_entry


def test_building_an_entry_removes_a_killed_builds_scratch_file(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale = tmp_path / f".images.npy.{dead}.a1b2c3.building.npy"
    stale.write_bytes(b"\x93NUMPY half an array")

    def fill(images: np.ndarray) -> list:
        images[:] = np.arange(images.size, dtype=np.uint64).reshape(images.shape) % 251
        return []

    entry = write_entry(tmp_path, (3, 4, 4, 3), np.array([0, 1, 0]), fill, {"name": "t"})
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npy", "labels.npy", "meta.json"]
    assert open_entry(tmp_path) is not None and len(entry.labels) == 3

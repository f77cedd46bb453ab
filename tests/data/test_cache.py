"""The decoded image cache: an entry is built whole, and what a killed build left behind is cleaned up; reuse,
invalidation when a file changes, interrupted and multi-process builds, its location."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers.data import build_cached, make_image_folder, solid
from vitkit.data import cache as cache_mod
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


def test_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    first = build_cached(root)
    assert first.meta["cache"]["hit"] is False and first.meta["cache"]["images_per_second"] > 0
    again = build_cached(root)
    assert again.meta["cache"]["hit"] is True
    assert again.meta["cache"]["directory"] == first.meta["cache"]["directory"]
    assert np.array_equal(np.asarray(again.images), np.asarray(first.images))
    png = root / "train" / "cat" / "c.png"
    solid((1, 2, 3)).save(png)
    os.utime(png, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = build_cached(root)
    assert changed.meta["cache"]["hit"] is False
    assert changed.meta["cache"]["directory"] != first.meta["cache"]["directory"]
    assert (changed.images[2] == (1, 2, 3)).all()
    resized = build_cached(root, storage_size=8)  # another storage size is another entry
    assert resized.images.shape == (7, 8, 8, 3) and resized.meta["cache"]["hit"] is False


def test_interrupted_build_is_never_used_and_leaves_no_scratch(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    real = cache_mod.decode_files_into

    def crash(images, files, **kw):
        images[:2] = 255  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr("vitkit.data.imagefolder.decode_files_into", crash)
    with pytest.raises(KeyboardInterrupt):
        build_cached(root)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == []
    monkeypatch.setattr("vitkit.data.imagefolder.decode_files_into", real)
    ds = build_cached(root)
    assert ds.meta["cache"]["hit"] is False and not (ds.images[0] == 255).all()


def test_multiprocess_build_matches_single_process(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    single = build_cached(root, cache_dir=tmp_path / "c0", num_workers=0)
    multi = build_cached(root, cache_dir=tmp_path / "c2", num_workers=2)
    assert multi.meta["cache"]["workers"] == 2
    assert np.array_equal(np.asarray(single.images), np.asarray(multi.images))


def test_cache_dir_defaults_to_env_then_project(tmp_path, monkeypatch):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "envcache"))
    assert cache_mod.cache_root() == tmp_path / "envcache"
    monkeypatch.delenv("VITKIT_CACHE")
    monkeypatch.chdir(tmp_path)
    assert cache_mod.cache_root() == tmp_path / ".cache" / "vitkit"

"""ImageFolder through the decoded cache: formats, bad files, bombs, layout errors, cache keying and atomicity."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.data import jpeg_bytes, make_image_folder, real_cifar10_root, solid
from vitkit.data import build_dataset, build_loader
from vitkit.data import cache as cache_mod
from vitkit.data.decode import BadImageError, decode_rgb, jpeg_header
from vitkit.data.imagefolder import DatasetLayoutError, class_folders, scan_split, split_folder


def _build(root, split="train", **kw):
    kw.setdefault("cache_dir", root.parent / "cache")
    kw.setdefault("num_workers", 0)
    return build_dataset(root, split, **kw)


def test_every_format_decodes_to_rgb_and_bad_files_are_skipped_and_reported(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root)
    with pytest.warns(UserWarning, match=r"2 of 9 images .* were skipped; the list is in .*skipped.tsv") as rec:
        ds = _build(root)
    assert ds.classes == ["cat", "dog"]
    assert isinstance(ds.images, np.memmap) and ds.images.shape == (7, 12, 12, 3)
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert ds.meta["skipped"] == 2
    report = ds.meta["skipped_report"]
    lines = open(report).read().splitlines()
    assert sorted(os.path.basename(line.split("\t")[0]) for line in lines) == ["corrupt.jpg", "truncated.jpg"]
    assert all(line.split("\t")[1] for line in lines)  # a reason for each
    assert "skipped.tsv" in str(rec[0].message)
    # cat: a.jpg (red JPEG), b.jpeg, c.png (green), d.webp (blue); dog: e.bmp, gray.png, palette.png
    np.testing.assert_allclose(ds.images[0].reshape(-1, 3).mean(0), (200, 30, 30), atol=4)
    assert (ds.images[2] == (10, 200, 10)).all() and (ds.images[3] == (30, 30, 220)).all()
    assert (ds.images[4] == (90, 90, 10)).all()
    assert (ds.images[5] == 77).all()  # grayscale -> RGB with equal channels
    assert (ds.images[6] == (250, 120, 5)).all()  # palette index 1 -> its colour
    image, label = ds[6]
    assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and label == 1


def test_policy_error_raises_with_the_path(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root)
    with pytest.raises(BadImageError, match=r"(corrupt|truncated)\.jpg"):
        _build(root, bad_files="error")
    assert not list((tmp_path / "cache").glob("*/meta.json"))  # nothing half-built is left usable
    with pytest.warns(UserWarning, match="skipped"):
        _build(root)  # an entry built under 'skip' ...
    with pytest.raises(BadImageError, match=r"corrupt\.jpg"):
        _build(root, bad_files="error")  # ... does not hide its bad files from a later 'error' run


def test_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    first = _build(root)
    assert first.meta["cache"]["hit"] is False and first.meta["cache"]["images_per_second"] > 0
    again = _build(root)
    assert again.meta["cache"]["hit"] is True
    assert again.meta["cache"]["directory"] == first.meta["cache"]["directory"]
    assert np.array_equal(np.asarray(again.images), np.asarray(first.images))
    png = root / "train" / "cat" / "c.png"
    solid((1, 2, 3)).save(png)
    os.utime(png, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = _build(root)
    assert changed.meta["cache"]["hit"] is False
    assert changed.meta["cache"]["directory"] != first.meta["cache"]["directory"]
    assert (changed.images[2] == (1, 2, 3)).all()
    resized = _build(root, storage_size=8)  # another storage size is another entry
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
        _build(root)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == []
    monkeypatch.setattr("vitkit.data.imagefolder.decode_files_into", real)
    ds = _build(root)
    assert ds.meta["cache"]["hit"] is False and not (ds.images[0] == 255).all()


def test_multiprocess_build_matches_single_process(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    single = _build(root, cache_dir=tmp_path / "c0", num_workers=0)
    multi = _build(root, cache_dir=tmp_path / "c2", num_workers=2)
    assert multi.meta["cache"]["workers"] == 2
    assert np.array_equal(np.asarray(single.images), np.asarray(multi.images))


def test_mixed_sizes_are_fitted_to_the_storage_size(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    wide = np.zeros((12, 24, 3), np.uint8)
    wide[:, 6:18] = 200  # the centre square survives the center crop
    Image.fromarray(wide).save(root / "train" / "cat" / "wide.png")
    ds = _build(root)  # storage size from the first image: 12x12
    assert ds.images.shape == (8, 12, 12, 3)
    assert (ds.images[4] == 200).all()  # cat files sorted: a, b, c, d, wide


def test_decompression_bombs_are_refused(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    (root / "train" / "cat" / "big.jpg").write_bytes(jpeg_bytes(solid((1, 1, 1), (40, 40))))
    solid((1, 1, 1), (40, 40)).save(root / "train" / "dog" / "big.png")
    with pytest.warns(UserWarning, match="2 of 9"):
        ds = _build(root, max_pixels=1000, storage_size=12)
    reasons = open(ds.meta["skipped_report"]).read()
    assert reasons.count("decompression bomb") == 2 and "40x40 = 1600 pixels" in reasons
    with pytest.raises(BadImageError, match="big"):
        _build(root, max_pixels=1000, storage_size=12, bad_files="error", cache_dir=tmp_path / "other")


def test_jpeg_header_claiming_a_huge_size_is_refused_before_decoding():
    data = bytearray(jpeg_bytes(solid((5, 5, 5), (16, 16))))
    w, h, comps = jpeg_header(bytes(data))
    assert (w, h, comps) == (16, 16, 3)
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2  # height, width
    with pytest.raises(BadImageError, match="60000x60000 .* decompression bomb"):
        decode_rgb(bytes(data), "bomb.jpg")


def test_pil_bomb_check_and_corrupt_bytes():
    buf = io.BytesIO()
    solid((1, 2, 3), (64, 64)).save(buf, "PNG")
    with pytest.raises(BadImageError, match="4096 pixels exceeds the limit of 100"):
        decode_rgb(buf.getvalue(), "x.png", max_pixels=100)
    with pytest.raises(BadImageError, match="empty file"):
        decode_rgb(b"", "e.jpg")
    with pytest.raises(BadImageError, match="not a recognised image"):
        decode_rgb(b"hello world, certainly not an image", "t.jpg")


def test_layout_errors_name_the_path_and_expectation(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        _build(tmp_path / "missing")
    flat = tmp_path / "flat"
    (flat / "cat").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"expected an ImageFolder root with a train/ folder"):
        _build(flat)
    loose = tmp_path / "loose"
    (loose / "train").mkdir(parents=True)
    solid((1, 1, 1)).save(loose / "train" / "x.png")
    with pytest.raises(DatasetLayoutError, match="one subfolder per class.*put them in class folders"):
        _build(loose)
    empty = tmp_path / "empty"
    make_image_folder(empty, bad=False, val=False)
    (empty / "train" / "zebra").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"zebra has no images"):
        _build(empty)
    differ = tmp_path / "differ"
    make_image_folder(differ, bad=False)
    (differ / "val" / "dog").rename(differ / "val" / "wolf")
    with pytest.raises(DatasetLayoutError, match=r"missing \['dog'\], unexpected \['wolf'\]"):
        _build(differ, "val")


def test_val_split_uses_train_statistics_and_falls_back_to_test_folder(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    train = _build(root)
    val = _build(root, "val")
    assert len(val) == 2 and val.mean == train.mean and val.std == train.std
    (root / "val").rename(root / "test")
    test_as_val = _build(root, "val")
    assert test_as_val.meta["split_source"] == "test" and len(test_as_val) == 2


def test_val_fraction_on_a_cached_dataset_stays_memory_mapped(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    full = _build(root)
    tr = _build(root, "train", val_fraction=0.3, seed=0)
    va = _build(root, "val", val_fraction=0.3, seed=0)
    assert isinstance(tr.images, np.memmap) and isinstance(va.images, np.memmap)
    assert len(tr) + len(va) == len(full) and set(va.labels.tolist()) == {0, 1}
    rows = {r.tobytes() for r in np.asarray(full.images)}
    assert all(r.tobytes() in rows for r in np.asarray(va.images))
    loader = build_loader(tr, 2, train=True)
    x, y = next(iter(loader))
    assert x.shape == (2, 3, 12, 12) and y.dtype == torch.int64


def test_cache_cli_builds_then_reuses(tmp_path, capsys):
    from vitkit.cli import main

    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    args = ["cache", str(root), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--splits", "train", "val"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("train") and "built at" in out[0] and "val" in out[1]
    assert main(args) == 0
    assert all("reused" in line for line in capsys.readouterr().out.splitlines())


def test_cache_dir_defaults_to_env_then_project(tmp_path, monkeypatch):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "envcache"))
    assert cache_mod.cache_root() == tmp_path / "envcache"
    monkeypatch.delenv("VITKIT_CACHE")
    monkeypatch.chdir(tmp_path)
    assert cache_mod.cache_root() == tmp_path / ".cache" / "vitkit"


@pytest.mark.skipif(real_cifar10_root() is None, reason="shared CIFAR-10 JPEG copy not present")
def test_real_cifar10_folder_layout_and_a_slice_of_its_jpegs(tmp_path):
    real = real_cifar10_root()
    train_dir = split_folder(real, "train")
    classes = class_folders(train_dir)
    assert len(classes) == 10 and classes == sorted(classes)
    files, labels = scan_split(train_dir, classes)
    assert len(files) == 50000 and np.bincount(labels).tolist() == [5000] * 10
    assert split_folder(real, "val").name == "test"
    # decode a few real JPEGs per class through the cache (symlinked, so the test stays fast)
    for split in ("train", "test"):
        for c in classes:
            (tmp_path / "mini" / split / c).mkdir(parents=True)
            for f in sorted((real / split / c).iterdir())[:3]:
                (tmp_path / "mini" / split / c / f.name).symlink_to(f)
    ds = _build(tmp_path / "mini", "val")
    assert ds.images.shape == (30, 32, 32, 3) and ds.classes == classes
    ref = np.asarray(Image.open(sorted((real / "test" / classes[0]).iterdir())[0]).convert("RGB"))
    assert np.abs(ds.images[0].astype(int) - ref.astype(int)).max() <= 2  # libjpeg-turbo vs PIL rounding

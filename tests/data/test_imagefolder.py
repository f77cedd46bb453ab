"""ImageFolder through the decoded cache: formats, bad files, bombs, layout errors, splits, a real CIFAR-10 copy."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.data import build_cached, jpeg_bytes, make_image_folder, real_cifar10_root, solid
from vitkit.data import build_loader
from vitkit.data.decode import BadImageError
from vitkit.data.imagefolder import DatasetLayoutError, class_folders, scan_split, split_folder


def test_every_format_decodes_to_rgb_and_bad_files_are_skipped_and_reported(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root)
    with pytest.warns(UserWarning, match=r"2 of 9 images .* were skipped; the list is in .*skipped.tsv") as rec:
        ds = build_cached(root)
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
        build_cached(root, bad_files="error")
    assert not list((tmp_path / "cache").glob("*/meta.json"))  # nothing half-built is left usable
    with pytest.warns(UserWarning, match="skipped"):
        build_cached(root)  # an entry built under 'skip' ...
    with pytest.raises(BadImageError, match=r"corrupt\.jpg"):
        build_cached(root, bad_files="error")  # ... does not hide its bad files from a later 'error' run


def test_mixed_sizes_are_fitted_to_the_storage_size(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    wide = np.zeros((12, 24, 3), np.uint8)
    wide[:, 6:18] = 200  # the centre square survives the center crop
    Image.fromarray(wide).save(root / "train" / "cat" / "wide.png")
    ds = build_cached(root)  # storage size from the first image: 12x12
    assert ds.images.shape == (8, 12, 12, 3)
    assert (ds.images[4] == 200).all()  # cat files sorted: a, b, c, d, wide


def test_decompression_bombs_are_refused(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    (root / "train" / "cat" / "big.jpg").write_bytes(jpeg_bytes(solid((1, 1, 1), (40, 40))))
    solid((1, 1, 1), (40, 40)).save(root / "train" / "dog" / "big.png")
    with pytest.warns(UserWarning, match="2 of 9"):
        ds = build_cached(root, max_pixels=1000, storage_size=12)
    reasons = open(ds.meta["skipped_report"]).read()
    assert reasons.count("decompression bomb") == 2 and "40x40 = 1600 pixels" in reasons
    with pytest.raises(BadImageError, match="big"):
        build_cached(root, max_pixels=1000, storage_size=12, bad_files="error", cache_dir=tmp_path / "other")


def test_layout_errors_name_the_path_and_expectation(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        build_cached(tmp_path / "missing")
    flat = tmp_path / "flat"
    (flat / "cat").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"expected an ImageFolder root with a train/ folder"):
        build_cached(flat)
    loose = tmp_path / "loose"
    (loose / "train").mkdir(parents=True)
    solid((1, 1, 1)).save(loose / "train" / "x.png")
    with pytest.raises(DatasetLayoutError, match="one subfolder per class.*put them in class folders"):
        build_cached(loose)
    empty = tmp_path / "empty"
    make_image_folder(empty, bad=False, val=False)
    (empty / "train" / "zebra").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"zebra has no images"):
        build_cached(empty)
    differ = tmp_path / "differ"
    make_image_folder(differ, bad=False)
    (differ / "val" / "dog").rename(differ / "val" / "wolf")
    with pytest.raises(DatasetLayoutError, match=r"missing \['dog'\], unexpected \['wolf'\]"):
        build_cached(differ, "val")


def test_val_split_uses_train_statistics_and_falls_back_to_test_folder(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    train = build_cached(root)
    val = build_cached(root, "val")
    assert len(val) == 2 and val.mean == train.mean and val.std == train.std
    (root / "val").rename(root / "test")
    test_as_val = build_cached(root, "val")
    assert test_as_val.meta["split_source"] == "test" and len(test_as_val) == 2


def test_val_fraction_on_a_cached_dataset_stays_memory_mapped(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    full = build_cached(root)
    tr = build_cached(root, "train", val_fraction=0.3, seed=0)
    va = build_cached(root, "val", val_fraction=0.3, seed=0)
    assert isinstance(tr.images, np.memmap) and isinstance(va.images, np.memmap)
    assert len(tr) + len(va) == len(full) and set(va.labels.tolist()) == {0, 1}
    rows = {r.tobytes() for r in np.asarray(full.images)}
    assert all(r.tobytes() in rows for r in np.asarray(va.images))
    loader = build_loader(tr, 2, train=True)
    x, y = next(iter(loader))
    assert x.shape == (2, 3, 12, 12) and y.dtype == torch.int64


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
    ds = build_cached(tmp_path / "mini", "val")
    assert ds.images.shape == (30, 32, 32, 3) and ds.classes == classes
    ref = np.asarray(Image.open(sorted((real / "test" / classes[0]).iterdir())[0]).convert("RGB"))
    assert np.abs(ds.images[0].astype(int) - ref.astype(int)).max() <= 2  # libjpeg-turbo vs PIL rounding

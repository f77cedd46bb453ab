"""build_dataset for the in-memory kinds (digits, synthetic), and the split rules: which data serves validation and
test for every kind and image-folder layout, and what a run's summary says about it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.data import build_cached, make_image_folder, solid
from vitkit.data import ArrayDataset, build_dataset, channel_stats, stratified_split
from vitkit.data.datasets import split_summary


def test_digits_fixed_split():
    train = build_dataset("digits", "train")
    test = build_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (8, 8, 1)
    assert train.channels == 1 and train.image_size == (8, 8) and train.num_classes == 10
    assert train.mean == test.mean and 0 < train.mean[0] < 1 and 0 < train.std[0] < 1
    assert int(train.images.max()) == 255
    again = build_dataset("digits", "test", seed=123)  # the user seed never moves the test set
    assert np.array_equal(again.labels, test.labels) and np.array_equal(again.images, test.images)
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (1, 8, 8) and label == int(train.labels[0])


def test_val_fraction_carves_stratified_disjoint_split():
    full = build_dataset("digits", "train")
    tr = build_dataset("digits", "train", val_fraction=0.1, seed=1)
    va = build_dataset("digits", "val", val_fraction=0.1, seed=1)
    assert len(tr) + len(va) == len(full)
    assert abs(len(va) - 0.1 * len(full)) <= 10
    assert set(np.unique(va.labels)) == set(range(10))
    # disjoint: no image row of val appears in train at the same class count
    tr_rows = {r.tobytes() for r in tr.images}
    assert sum(r.tobytes() in tr_rows for r in va.images) < 5  # digits has a few duplicate images, not more
    other = build_dataset("digits", "val", val_fraction=0.1, seed=2)
    assert not np.array_equal(other.images, va.images)
    assert va.meta["split_source"] == "0.1 of train"


def test_val_without_fraction_falls_back_to_test_and_says_they_are_the_same_images():
    va = build_dataset("digits", "val")
    te = build_dataset("digits", "test")
    assert np.array_equal(va.labels, te.labels) and va.split == "val"
    assert va.meta["split_source"] == "test (val_fraction=0: validation and test are the same images)"
    summary = split_summary(build_dataset("digits", "train"), va, te)
    assert summary["splits"]["val"] == va.meta["split_source"] and summary["test_split"] == "test"


def test_synthetic_is_learnable_and_sized():
    ds = build_dataset("synthetic", "train", num_samples=300, image_size=16, num_classes=4)
    assert ds.images.shape == (300, 16, 16, 3) and ds.num_classes == 4
    # class templates differ, so per-class means are far apart relative to noise
    means = np.stack([ds.images[ds.labels == c].mean(0) for c in range(4)])
    assert np.abs(means[0] - means[1]).mean() > 20
    test = build_dataset("synthetic", "test", num_samples=50, image_size=16, num_classes=4)
    assert len(test) == 50 and not np.array_equal(test.images[:10], ds.images[:10])


def test_build_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="split"):
        build_dataset("digits", "dev")
    with pytest.raises(ValueError, match="bad_files"):
        build_dataset("digits", "train", bad_files="ignore")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        build_dataset("nope", "train")
    with pytest.raises(ValueError, match="val_fraction"):
        build_dataset("digits", "train", val_fraction=1.5)


def test_array_dataset_validation_and_stats():
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[:, :, :, 0] = 255
    ds = ArrayDataset(images, np.array([0, 1, 0, 1]), ["a", "b"], *channel_stats(images))
    assert ds.mean == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(images.astype(np.float32), np.zeros(4), ["a"], (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="labels must lie"):
        ArrayDataset(images, np.array([0, 1, 2, 0]), ["a", "b"], (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="3 values"):
        ArrayDataset(images, np.zeros(4), ["a"], (0,), (1,))


def test_stratified_split_is_seeded():
    labels = np.repeat(np.arange(3), 10)
    keep, carved = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[carved]).tolist() == [2, 2, 2]
    assert np.intersect1d(keep, carved).size == 0 and keep.size + carved.size == 30
    assert np.array_equal(carved, stratified_split(labels, 0.2, seed=0)[1])


def test_storage_size_is_ignored_with_a_warning_for_in_memory_kinds():
    with pytest.warns(UserWarning, match="storage_size=16 is ignored for 'synthetic'"):
        ds = build_dataset("synthetic", "test", storage_size=16, num_samples=4, image_size=8)
    assert ds.image_size == (8, 8)


def _class_folder(root, per_class=(6, 4)):
    """A plain ``root/<class>/<image>`` folder (what torchvision's ImageFolder takes), distinct 12x12 images."""
    for c, (name, n) in enumerate(zip(("cat", "dog"), per_class)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            solid((20 * i, 100 * c, 7), (12, 12)).save(root / name / f"{i}.png")


def test_a_plain_class_folder_carves_a_seeded_stratified_val_and_says_there_is_no_test_set(tmp_path):
    root = tmp_path / "pets"
    _class_folder(root)
    kw = dict(val_fraction=0.25, seed=3)
    train, val, test = (build_cached(root, split, **kw) for split in ("train", "val", "test"))
    assert (len(train), len(val)) == (7, 3) and np.bincount(val.labels).tolist() == [2, 1]  # a share of each class
    rows = {r.tobytes() for r in np.asarray(train.images)}
    assert not any(r.tobytes() in rows for r in np.asarray(val.images))  # disjoint
    assert np.array_equal(np.asarray(build_cached(root, "val", **kw).images), np.asarray(val.images))  # seeded
    assert np.array_equal(np.asarray(test.images), np.asarray(val.images)) and test.split == "test"
    for ds in (train, val):  # the source file of every row, e.g. for evaluating the raw images
        assert [Path(f).parent.name for f in ds.meta["files"]] == [ds.classes[y] for y in ds.labels]
    summary = split_summary(train, val, test)
    assert summary["splits"] == {"train": "pets minus 0.25 carved for val", "val": "0.25 of pets",
                                 "test": "0.25 of pets"}
    assert summary["test_split"] == ("none: no separate test set, so the test figures are on the validation split "
                                     "(0.25 of pets)")
    with pytest.raises(ValueError, match=r"no val/ \(or test/\) folder and val_fraction is 0: .*data.val_fraction"):
        build_cached(root, "val")


def test_train_and_val_folders_validate_on_val_and_test_on_test_when_there_is_one(tmp_path):
    root = tmp_path / "data"
    counts = make_image_folder(root, bad=False)
    kw = dict(val_fraction=0.5)  # ignored: the folder has its own validation images
    train, val, test = (build_cached(root, split, **kw) for split in ("train", "val", "test"))
    assert len(train) == counts["train"] and train.meta["split_source"] == "data/train"
    assert len(val) == counts["val"] and val.meta["split_source"] == "data/val"
    assert split_summary(train, val, test)["test_split"].startswith("none: no separate test set")
    (root / "test" / "cat").mkdir(parents=True)
    (root / "test" / "dog").mkdir()
    for name in ("cat", "dog"):
        for i in range(3):
            solid((i, i, i)).save(root / "test" / name / f"t{i}.png")
    test = build_cached(root, "test", **kw)
    assert len(test) == 6 and test.meta["separate_test"] is True
    assert split_summary(train, build_cached(root, "val", **kw), test) == {
        "splits": {"train": "data/train", "val": "data/val", "test": "data/test"}, "test_split": "data/test"}
    (root / "val").rename(root / "old_val")  # without val/, validation is carved out of train/ (old_val is no split)
    carved = build_cached(root, "val", val_fraction=0.3)
    assert carved.meta["split_source"] == "0.3 of data/train" and build_cached(root, "test").meta["separate_test"]

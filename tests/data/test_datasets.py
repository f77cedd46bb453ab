"""build_dataset for the in-memory kinds (digits, synthetic) and the split rules shared by every kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitkit.data import ArrayDataset, build_dataset, channel_stats, stratified_split


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


def test_val_without_fraction_falls_back_to_test():
    va = build_dataset("digits", "val")
    te = build_dataset("digits", "test")
    assert np.array_equal(va.labels, te.labels) and va.split == "val" and va.meta["split_source"] == "test"


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

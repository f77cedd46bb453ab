"""CIFAR python-batch reader: official layout, safe unpickling, cache, storage size; never downloads in tests."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from tests.helpers.data import make_fake_cifar10, make_fake_cifar100
from vitkit.data import build_dataset
from vitkit.data.cifar import UnsafePickleError, load_batch


def test_cifar10_batches_decode_in_the_official_layout(tmp_path):
    make_fake_cifar10(tmp_path / "src")
    train = build_dataset("cifar10", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache")
    assert isinstance(train.images, np.memmap) and train.images.shape == (20, 32, 32, 3)
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and train.num_classes == 10
    assert train.labels[:4].tolist() == [1, 2, 3, 4]  # batch 1: (1 + i) % 10
    # row-major CHW planes -> HWC: image i channel c has value 3 i + c; red plane marker at (0, 1)
    assert train.images[5, 4, 4].tolist() == [15, 16, 17]
    assert train.images[5, 0, 1, 0] == 250 and train.images[5, 1, 0, 0] == 15
    assert train.meta["cache"]["hit"] is False
    assert build_dataset("cifar10", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache").meta["cache"]["hit"]
    val = build_dataset("cifar10", "val", root=tmp_path / "src" / "cifar-10-batches-py", cache_dir=tmp_path / "cache")
    assert len(val) == 3 and val.meta["split_source"].startswith("test (val_fraction=0: validation and test") and val.mean == train.mean


def test_cifar_storage_size_and_val_fraction(tmp_path):
    make_fake_cifar10(tmp_path / "src")
    big = build_dataset("cifar10", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache", storage_size=48)
    assert big.images.shape == (20, 48, 48, 3)
    assert big.images[5, 24, 24].tolist() == [15, 16, 17]  # flat colour survives resizing
    va = build_dataset("cifar10", "val", root=tmp_path / "src", cache_dir=tmp_path / "cache", val_fraction=0.25)
    tr = build_dataset("cifar10", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache", val_fraction=0.25)
    assert len(va) + len(tr) == 20 and len(va) >= 4


def test_cifar100_fine_and_coarse_labels(tmp_path):
    make_fake_cifar100(tmp_path / "src")
    fine = build_dataset("cifar100", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache")
    assert fine.num_classes == 100 and fine.labels.tolist() == [0, 7, 14, 21, 28, 35]
    coarse = build_dataset("cifar100", "test", root=tmp_path / "src", cache_dir=tmp_path / "cache", label_mode="coarse")
    assert coarse.num_classes == 20 and coarse.classes[1] == "coarse1" and len(coarse) == 2
    with pytest.raises(ValueError, match="label_mode"):
        build_dataset("cifar100", "train", root=tmp_path / "src", cache_dir=tmp_path / "c2", label_mode="medium")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = make_fake_cifar10(tmp_path / "src")
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"data_batch_3: refusing to load global (posix|os)\.system"):
        build_dataset("cifar10", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(UnsafePickleError):
        load_batch(folder / "data_batch_3")


def test_malformed_and_missing_batches(tmp_path):
    folder = make_fake_cifar10(tmp_path / "src")
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, 2))
    with pytest.raises(ValueError, match=r"data_batch_2: 'data' must be uint8 \(N, 3072\)"):
        build_dataset("cifar10", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache")
    (folder / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="not a readable CIFAR python batch"):
        build_dataset("cifar10", "train", root=tmp_path / "src", cache_dir=tmp_path / "cache")
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing cifar10 files \['test_batch'\]"):
        build_dataset("cifar10", "test", root=tmp_path / "src", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="needs root="):
        build_dataset("cifar10", "train", cache_dir=tmp_path / "cache")


def test_download_is_opt_in_and_checksummed(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, filename, md5):  # no network in tests: "extract" fake batches instead
        calls.append((url, filename, md5))
        make_fake_cifar10(tmp_path / "dl")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fake_download)
    with pytest.raises(FileNotFoundError):
        build_dataset("cifar10", "train", root=tmp_path / "dl", cache_dir=tmp_path / "cache")
    assert calls == []  # download=False never touches the network
    with pytest.raises(ValueError, match="failed their md5 check"):
        build_dataset("cifar10", "train", root=tmp_path / "dl", cache_dir=tmp_path / "cache", download=True)
    url, filename, md5 = calls[0]
    assert url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" and md5 == "c58f30108f718f92721af3b95e74349a"

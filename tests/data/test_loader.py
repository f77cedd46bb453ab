"""Loader: deterministic order from (seed, epoch), disjoint shards, exact mid-epoch resume, both paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from vitkit.data import ArrayDataset, build_loader


def _indexed_dataset(n: int = 50, size: int = 4) -> ArrayDataset:
    """Each image's pixels hold its own index (mod 256), so a batch tells which samples it holds."""
    images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, size, size, 3)).copy()
    labels = np.arange(n) % 5
    return ArrayDataset(images, labels, [str(i) for i in range(5)], (0.5,) * 3, (0.25,) * 3)


def _ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].long().tolist()


def _epoch_ids(loader) -> list[list[int]]:
    return [_ids(x) for x, _ in loader]


def test_tensor_path_shapes_and_labels():
    ds = _indexed_dataset()
    loader = build_loader(ds, 8, train=False)
    batches = list(loader)
    assert len(batches) == len(loader) == 7  # 50 samples, no drop_last for eval
    x, y = batches[0]
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 4, 4)
    assert y.dtype == torch.int64
    assert y.tolist() == [i % 5 for i in _ids(x)]
    assert sum((_ids(x) for x, _ in batches), []) == list(range(50))  # eval order is the dataset order


def test_train_order_is_function_of_seed_and_epoch():
    ds = _indexed_dataset()
    a = build_loader(ds, 8, train=True, seed=3)
    b = build_loader(ds, 8, train=True, seed=3, num_workers=2)  # prefetch threads must not change the order
    assert len(a) == 6  # drop_last by default in training
    e0 = _epoch_ids(a)
    assert e0 == _epoch_ids(b)
    flat = sum(e0, [])
    assert len(set(flat)) == 48 and flat != sorted(flat)
    e1 = _epoch_ids(a)  # a finished epoch rolls over to the next one
    assert a.epoch == 2 and e1 != e0
    b.set_epoch(1)
    assert _epoch_ids(b) == e1
    c = build_loader(ds, 8, train=True, seed=4)
    assert _epoch_ids(c) != e0


def test_resume_mid_epoch_matches_uninterrupted_run():
    ds = _indexed_dataset()
    full = build_loader(ds, 8, train=True, seed=1)
    full.set_epoch(2)
    expected = _epoch_ids(full)

    first = build_loader(ds, 8, train=True, seed=1)
    first.set_epoch(2)
    seen = []
    for x, _ in first:
        seen.append(_ids(x))
        if len(seen) == 3:
            break
    state = first.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 3 and state["seed"] == 1

    resumed = build_loader(ds, 8, train=True, seed=99)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the engine may re-announce the epoch; the position must survive it
    assert resumed.position == 3
    seen += _epoch_ids(resumed)
    assert seen == expected


def test_resume_skips_done_batches_without_reading_them():
    class Counting(np.ndarray):
        reads: list = []

        def __getitem__(self, item):
            Counting.reads.append(item)
            return np.asarray(self).__getitem__(item)

    ds = _indexed_dataset()
    ds.images = ds.images.view(Counting)
    loader = build_loader(ds, 8, train=True)
    loader.load_state_dict({"epoch": 0, "batches_done": 5, "seed": 0})
    assert len(_epoch_ids(loader)) == 1
    assert len(Counting.reads) == 1


def test_load_state_dict_rejects_mismatched_state():
    loader = build_loader(_indexed_dataset(), 8, train=True)
    with pytest.raises(ValueError, match="batch_size"):
        loader.load_state_dict({"epoch": 0, "batches_done": 1, "seed": 0, "batch_size": 16})
    with pytest.raises(ValueError, match="outside"):
        loader.load_state_dict({"epoch": 0, "batches_done": 99, "seed": 0})


@pytest.mark.parametrize("train", [True, False])
def test_rank_shards_are_disjoint_and_cover(train):
    ds = _indexed_dataset(n=50)
    loaders = [build_loader(ds, 4, train=train, drop_last=False, rank=r, world_size=3) for r in range(3)]
    shards = [sum(_epoch_ids(lo), []) for lo in loaders]
    if train:  # padded so every rank runs the same number of steps
        assert len({len(s) for s in shards}) == 1 and len({len(lo) for lo in loaders}) == 1
        assert set().union(*shards) == set(range(50))
    else:  # evaluation: each sample exactly once across ranks
        assert sorted(sum(shards, [])) == list(range(50))


def test_bad_arguments():
    ds = _indexed_dataset()
    with pytest.raises(ValueError, match="rank"):
        build_loader(ds, 4, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no batches"):
        build_loader(ds, 64, train=True)


def test_per_sample_path_is_seeded_per_sample_and_resumable():
    ds = _indexed_dataset(n=24, size=8)
    transform = v2.Compose([v2.RandomCrop(8, padding=2), v2.ToDtype(torch.float32, scale=True)])
    a = build_loader(ds, 6, train=True, seed=5, transform=transform, num_workers=0)
    b = build_loader(ds, 6, train=True, seed=5, transform=transform, num_workers=2)
    xa = [x for x, _ in a]
    xb = [x for x, _ in b]
    assert xa[0].dtype == torch.float32 and xa[0].shape == (6, 3, 8, 8)
    assert all(torch.equal(p, q) for p, q in zip(xa, xb))  # worker count does not change the augmentation
    rng_before = torch.get_rng_state()
    c = build_loader(ds, 6, train=True, seed=5, transform=transform, num_workers=0)
    c.load_state_dict({"epoch": 0, "batches_done": 2, "seed": 5})
    xc = [x for x, _ in c]
    assert len(xc) == 2 and all(torch.equal(p, q) for p, q in zip(xa[2:], xc))
    d = build_loader(ds, 6, train=True, seed=0, transform=transform, num_workers=0)
    list(d)  # its workers/transform were set up with seed 0 ...
    d.load_state_dict({"epoch": 0, "batches_done": 2, "seed": 5})
    assert all(torch.equal(p, q) for p, q in zip(xa[2:], [x for x, _ in d]))  # ... and now follow seed 5
    assert torch.equal(rng_before, torch.get_rng_state())  # the caller's RNG is not consumed


def test_len_matches_the_batches_actually_built():
    for n in (5, 7, 12, 13):
        ds = _indexed_dataset(n=n)
        for world_size in (1, 2, 3):
            for rank in range(world_size):
                for train in (True, False):
                    loader = build_loader(ds, 2, train=train, drop_last=False, rank=rank, world_size=world_size)
                    assert len(loader) == len(loader.epoch_batches()), (n, world_size, rank, train)


@pytest.mark.parametrize("workers", [0, 2])
def test_channels_last_batches_are_the_same_pixels_in_the_caches_memory_order(workers):
    """channels_last=True: the same (B, C, H, W) batches, in NHWC memory (no NCHW copy); the default is contiguous
    NCHW, from the prefetch threads too."""
    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.integers(0, 255, (40, 6, 5, 3), np.uint8), np.arange(40) % 5, [str(i) for i in range(5)],
                      (0.5,) * 3, (0.25,) * 3)
    plain = list(build_loader(ds, 8, train=True, seed=3, num_workers=workers))
    nhwc = list(build_loader(ds, 8, train=True, seed=3, num_workers=workers, channels_last=True))
    assert len(plain) == len(nhwc) == 5
    for (a, ya), (b, yb) in zip(plain, nhwc):
        assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
        assert torch.equal(a, b) and torch.equal(ya, yb)

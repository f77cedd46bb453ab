"""One loader, two paths, one deterministic and resumable order.

The sample order of an epoch depends only on (seed, epoch), and a rank's shard only on (rank, world_size), so
a run stopped mid-epoch resumes at the exact next batch: ``state_dict()`` records (epoch, batches_done) and the
resumed loader skips the finished batches by index, without reading their images.

- Tensor path (``transform=None``): batches are gathered by index straight from the uint8 array (RAM or memmap)
  and moved to the device; augmentation then runs batched on the device (:class:`~vitkit.data.BatchAugment`).
- Per-sample path (``transform=`` a torchvision v2 transform): a torch DataLoader with worker processes, pinned
  memory on CUDA, persistent workers and prefetch. Each sample's augmentation is seeded from (seed, epoch, index),
  so it is the same whatever the worker count and after a resume.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from .arrays import ArrayDataset

PREFETCH_FACTOR = 2  # batches in flight per worker (thread or process)
_GOLDEN = 0x9E3779B97F4A7C15
_MIX = 0xBF58476D1CE4E5B9


def default_num_workers() -> int:
    """Worker processes for the per-sample path: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def epoch_permutation(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The global sample order of one epoch; a pure function of its arguments."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_samples).astype(np.int64)


def shard_indices(order: np.ndarray, rank: int, world_size: int, pad: bool) -> np.ndarray:
    """This rank's disjoint share of ``order`` (strided, like DistributedSampler).

    With ``pad`` (training) the order is wrapped to a multiple of world_size so every rank runs the same number
    of steps (DDP needs that); without it (evaluation) no sample is repeated and shards may differ by one sample.
    """
    if world_size == 1:
        return order
    if pad and order.size % world_size:
        extra = world_size - order.size % world_size
        order = np.concatenate([order, np.resize(order, extra)])
    return order[rank::world_size]


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (int(seed) * _GOLDEN + int(epoch) * _MIX + int(index)) % (2**63 - 1)


class _SeededTransform(torch.utils.data.Dataset):
    """Applies the per-sample transform under an RNG seeded from (seed, epoch, index): worker-count independent."""

    def __init__(self, dataset: ArrayDataset, transform: Callable[[torch.Tensor], Any], seed: int) -> None:
        self.dataset = dataset.with_transform(None)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Any, int]:
        index, epoch = item
        image, label = self.dataset[index]
        # Seed only the CPU generator the v2 transforms draw from: torch.manual_seed would also queue CUDA seeding
        # (with a captured traceback), costing more than the augmentation itself.
        cpu = torch.default_generator
        if torch.utils.data.get_worker_info() is not None:
            cpu.manual_seed(_sample_seed(self.seed, epoch, index))
            return self.transform(image), label
        saved = cpu.get_state()  # in the main process: leave the caller's RNG untouched
        try:
            cpu.manual_seed(_sample_seed(self.seed, epoch, index))
            return self.transform(image), label
        finally:
            cpu.set_state(saved)


class _RemainingBatches(torch.utils.data.Sampler):
    """Batch sampler over the loader's current epoch, from its current position (read at each iteration)."""

    def __init__(self, loader: EpochLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.loader.epoch
        for batch in self.loader.epoch_batches()[self.loader.batches_done :]:
            yield [(int(i), epoch) for i in batch]

    def __len__(self) -> int:
        return len(self.loader) - self.loader.batches_done


class EpochLoader:
    """Deterministic, shardable, resumable batches of an :class:`ArrayDataset` (see the module docstring)."""

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        drop_last: bool | None = None,
        device: str | torch.device = "cpu",
        num_workers: int | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset!r} is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.device = torch.device(device)
        self.transform = transform
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.channels_last = bool(channels_last)
        self.epoch = 0
        self.batches_done = 0
        self.pin_memory = self.device.type == "cuda"  # pinned host batches copy to the GPU asynchronously
        if transform is None:
            # Tensor path: "workers" are prefetch threads (gathering and pinning overlap the training step).
            self.num_workers = 0 if num_workers is None else int(num_workers)
        else:
            self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.persistent_workers = self.num_workers > 0  # workers outlive an epoch: no restart cost per epoch
        self._cached_epoch: tuple[int, list[np.ndarray]] | None = None
        self._torch_loader: torch.utils.data.DataLoader | None = None
        if len(self) == 0:
            raise ValueError(
                f"no batches: {len(self._shard(0))} samples on rank {rank} with batch_size={batch_size} and "
                f"drop_last={self.drop_last}"
            )

    # -- order ---------------------------------------------------------------------------------------------

    def _shard(self, epoch: int) -> np.ndarray:
        order = epoch_permutation(len(self.dataset), self.seed, epoch, shuffle=self.train)
        return shard_indices(order, self.rank, self.world_size, pad=self.train)

    def epoch_batches(self) -> list[np.ndarray]:
        """The index batches of the current epoch for this rank."""
        if self._cached_epoch is None or self._cached_epoch[0] != self.epoch:
            shard = self._shard(self.epoch)
            n = len(shard) // self.batch_size * self.batch_size if self.drop_last else len(shard)
            self._cached_epoch = (self.epoch, [shard[i : i + self.batch_size] for i in range(0, n, self.batch_size)])
        return self._cached_epoch[1]

    def __len__(self) -> int:
        total, ws = len(self.dataset), self.world_size
        n = -(-total // ws) if self.train else len(range(self.rank, total, ws))  # == len(self._shard(epoch))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def position(self) -> int:
        """Batches of the current epoch already delivered."""
        return self.batches_done

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate. Setting the epoch the loader is already in keeps its position, so a
        loader restored with ``load_state_dict`` may be given ``set_epoch(state["epoch"])`` without losing it."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.batches_done = 0

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "seed": self.seed,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state``: the next iteration starts at batch ``batches_done`` of epoch ``epoch``."""
        for key in ("num_samples", "batch_size", "world_size"):
            if key in state and int(state[key]) != self.state_dict()[key]:
                raise ValueError(
                    f"loader state was saved with {key}={state[key]} but this loader has {self.state_dict()[key]}: "
                    f"the saved position would point at different samples"
                )
        batches_done = int(state["batches_done"])
        if not 0 <= batches_done <= len(self):
            raise ValueError(f"batches_done={batches_done} is outside this loader's epoch of {len(self)} batches")
        seed = int(state.get("seed", self.seed))
        if seed != self.seed:  # workers hold the seed of their per-sample transforms: start them afresh
            self.seed, self._torch_loader = seed, None
        self._cached_epoch = None
        self.epoch = int(state["epoch"])
        self.batches_done = batches_done

    # -- iteration -----------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.batches_done >= len(self):  # a finished epoch rolls over to the next one
            self.set_epoch(self.epoch + 1)
        batches = self._tensor_batches() if self.transform is None else self._sample_batches()
        for images, labels in batches:
            self.batches_done += 1
            yield images, labels
        if self.batches_done >= len(self):
            self.set_epoch(self.epoch + 1)

    def _gather(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        order = np.sort(index)  # ascending reads are sequential on a memmap; batch order is irrelevant
        images = torch.from_numpy(np.ascontiguousarray(self.dataset.images[order]))
        labels = torch.from_numpy(np.ascontiguousarray(self.dataset.labels[order]))
        if self.pin_memory:
            images, labels = images.pin_memory(), labels.pin_memory()
        return images, labels

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor, nhwc: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.pin_memory and self.device.type == "cuda"
        images = images.to(self.device, non_blocking=non_blocking)
        labels = labels.to(self.device, non_blocking=non_blocking)
        if nhwc:  # storage order -> NCHW for the model, done on the device; channels_last: the same memory, no copy
            images = images.permute(0, 3, 1, 2)
            images = images if self.channels_last else images.contiguous()
        return images, labels

    def _tensor_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        todo = self.epoch_batches()[self.batches_done :]
        if self.num_workers <= 0:
            for index in todo:
                yield self._to_device(*self._gather(index), nhwc=True)
            return
        yield from self._prefetched(todo)

    def _prefetched(self, todo: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Gather batches in ``num_workers`` background threads (numpy and torch copies release the GIL)."""
        depth = max(2, self.num_workers * PREFETCH_FACTOR)
        slots: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()

        on_cpu = self.device.type == "cpu"  # the NHWC -> NCHW copy, too, is then done here, beside the consumer

        def produce() -> None:
            try:
                for index in todo:
                    if stop.is_set():
                        return
                    batch = self._gather(index)
                    slots.put(self._to_device(*batch, nhwc=True) if on_cpu else batch)
            except BaseException as exc:  # hand the failure to the consumer instead of dying silently
                slots.put(exc)
            slots.put(None)

        worker = threading.Thread(target=produce, name="vitkit-prefetch", daemon=True)
        worker.start()
        try:
            while (item := slots.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item if on_cpu else self._to_device(*item, nhwc=True)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    slots.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.01)

    def _sample_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._torch_loader is None:
            kwargs: dict[str, Any] = {}
            if self.num_workers > 0:
                kwargs.update(persistent_workers=self.persistent_workers, prefetch_factor=PREFETCH_FACTOR)
            self._torch_loader = torch.utils.data.DataLoader(
                _SeededTransform(self.dataset, self.transform, self.seed),
                batch_sampler=_RemainingBatches(self),
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                generator=torch.Generator().manual_seed(self.seed),  # never draw from the caller's global RNG
                **kwargs,
            )
        for images, labels in self._torch_loader:
            yield self._to_device(images, labels)

    def __repr__(self) -> str:
        path = "tensor" if self.transform is None else "per-sample"
        return (
            f"EpochLoader({path}, n={len(self.dataset)}, batch_size={self.batch_size}, batches={len(self)}, "
            f"train={self.train}, epoch={self.epoch}, position={self.batches_done}, rank={self.rank}/"
            f"{self.world_size}, workers={self.num_workers}, device={self.device})"
        )


def build_loader(
    dataset: ArrayDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    drop_last: bool | None = None,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
    transform: Callable[[torch.Tensor], Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
) -> EpochLoader:
    """Batches of ``dataset`` for training (shuffled by (seed, epoch), drop_last by default) or evaluation.

    ``transform=None`` gives uint8 (B, C, H, W) batches for :class:`BatchAugment` / :func:`normalize_batch`;
    a per-sample transform (e.g. :func:`build_train_transform`) gives its float output, collated.
    ``channels_last=True`` leaves those uint8 batches in the cache's own (B, H, W, C) memory order (a channels-last
    view, nothing copied): for a consumer that reads crops of them, as BatchAugment's random-resized crop does,
    whose resize kernel works channels-last anyway.
    """
    return EpochLoader(
        dataset, batch_size, train=train, seed=seed, drop_last=drop_last, device=device, num_workers=num_workers,
        transform=transform, rank=rank, world_size=world_size, channels_last=channels_last,
    )

"""Progressive resolution as a batch source: batches at the image size the run's progress calls for.

A schedule ``[[0, 16], [0.4, 24], [0.7, 32]]`` trains at 16 px for the first 40% of the run, then 24, then 32
(FlexiViT-style: the model resamples its position embedding per batch). With ``scale_batch`` a step at a smaller
size joins ``(native / size)^2`` loader batches (at most 4), so a step carries as many pixels as at full size and
the device stays as busy. The training loop reads one stream of :class:`ScheduledBatch` either way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

MAX_MERGE = 4


def size_at(schedule: list[tuple[float, int]] | None, progress: float, default: tuple[int, int]) -> tuple[int, int]:
    """The training image size of a progressive-resolution schedule at ``progress`` (fraction of the run)."""
    size = default
    for start, side in schedule or ():
        if progress >= start:
            size = (side, side)
    return size


@dataclass(frozen=True)
class ResolutionSchedule:
    steps: list[tuple[float, int]]  # [(fraction of the run, image side), ...], the first at fraction 0
    native: tuple[int, int]  # the model's own size: what evaluation runs at
    scale_batch: bool = False  # join loader batches while images are smaller

    def size_at(self, progress: float) -> tuple[int, int]:
        return size_at(self.steps, progress, self.native)

    def merge_at(self, size: tuple[int, int]) -> int:
        """Loader batches per step at image size ``size``: same pixels per step when scaling, capped; else 1."""
        if not self.scale_batch:
            return 1
        return max(1, min(MAX_MERGE, round(self.native[0] * self.native[1] / (size[0] * size[1]))))


@dataclass
class ScheduledBatch:
    images: torch.Tensor
    labels: torch.Tensor
    size: tuple[int, int] | None  # the size to train this batch at; None: as the loader delivers it
    loader_batches: int  # loader batches joined into this one


def scheduled_batches(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], schedule: ResolutionSchedule | None,
                      progress: Callable[[], float]) -> Iterator[ScheduledBatch]:
    """The loader's batches, each tagged with its training size; ``progress()`` is asked once per yielded batch,
    before it is assembled (so a time-budget schedule sees the clock as the batch starts)."""
    stream = iter(batches)
    for images, labels in stream:
        if schedule is None:
            yield ScheduledBatch(images, labels, None, 1)
            continue
        size = schedule.size_at(progress())
        more = list(itertools.islice(stream, schedule.merge_at(size) - 1))
        if more:
            images = torch.cat([images, *(m[0] for m in more)])
            labels = torch.cat([labels, *(m[1] for m in more)])
        yield ScheduledBatch(images, labels, size, 1 + len(more))


__all__ = ["ResolutionSchedule", "ScheduledBatch", "scheduled_batches", "size_at", "MAX_MERGE"]

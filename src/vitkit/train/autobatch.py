"""Automatic micro-batch size: the largest batch that fits, with accumulation keeping the effective batch unchanged.

On CUDA each candidate is tried with a real forward + backward and backed off on out-of-memory. A CPU has no such
signal (it swaps, or the kernel kills the process), so there the candidate is capped by ``train.cpu_batch_cap``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def divisors_desc(n: int, limit: int) -> list[int]:
    return [d for d in range(min(n, limit), 0, -1) if n % d == 0]


def find_micro_batch(effective: int, device: torch.device, cpu_cap: int, try_batch: Callable[[int], None]) -> int:
    """Largest divisor of ``effective`` (the per-process images per optimizer step) that runs without OOM.

    ``try_batch(b)`` must run one forward and backward at batch ``b`` and leave no gradients behind.
    """
    if device.type != "cuda":
        return divisors_desc(effective, cpu_cap)[0]
    for batch in divisors_desc(effective, effective):
        try:
            try_batch(batch)
            return batch
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    raise RuntimeError("train.auto_batch: even a batch of 1 does not fit in GPU memory")


__all__ = ["find_micro_batch", "divisors_desc"]

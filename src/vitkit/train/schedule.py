"""Learning-rate schedules: ``LambdaLR`` multipliers of each parameter group's peak lr, stepped once per optimizer
step (the groups themselves: vitkit.optim).
"""

from __future__ import annotations

import math

import torch

from .config import ScheduleConfig


class LRMultiplier:
    """lr multiplier at an optimizer step: linear warmup, then cosine to a floor, a constant, or steps of gamma.

    A plain callable object (not a closure) so ``LambdaLR.state_dict()`` stores its fields and resume restores them.
    With ``by_progress`` the decay follows ``progress``, the fraction of the run done, which the training loop sets
    before each ``scheduler.step()`` (of a time budget, or of the data when batch sizes vary) instead of counting
    steps; the warmup still counts steps.
    """

    def __init__(self, kind: str, warmup_steps: int, total_steps: int, min_ratio: float, step_every: int,
                 gamma: float, by_progress: bool = False):
        self.by_progress = by_progress
        self.progress = 0.0
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio
        self.step_every = step_every
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** ((step - self.warmup_steps) // self.step_every)
        if self.by_progress:
            progress = min(1.0, self.progress)
        else:
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int,
    by_progress: bool = False,
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(0, total_steps - 1))
    fn = LRMultiplier(cfg.name, warmup, total_steps, cfg.min_lr_ratio,
                      max(1, round(cfg.step_epochs * steps_per_epoch)), cfg.gamma, by_progress)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


__all__ = ["build_scheduler", "LRMultiplier"]

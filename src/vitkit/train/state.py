"""The training loop's own state: the counters and sums that, with the model, optimizer, schedule, scaler, EMA,
loader position and random streams, make ``last.pt`` -- and nothing else the loop keeps between steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LoopState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # the epoch being trained (epochs completed)
    batch: int = 0  # loader batches of ``epoch`` already trained on; 0 at an epoch's start
    best: float | None = None  # the best checkpoint.metric so far
    bad_epochs: int = 0  # evaluations since ``best`` last improved (early stopping)
    images_seen: int = 0  # training images over all processes
    elapsed_s: float = 0.0  # training seconds (resumed runs included) when last synchronised with the clock
    # this epoch's (loss sum, correct, count) so far, so an epoch resumed mid-way reports all of its batches
    epoch_sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    stop_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Tensors and primitives only: ``last.pt`` is read back with ``torch.load(weights_only=True)``."""
        out = dataclasses.asdict(self)
        out["epoch_sums"] = self.epoch_sums.detach().cpu().clone()
        return out

    @classmethod
    def from_dict(cls, saved: dict[str, Any], device: torch.device) -> LoopState:
        """The loop state inside a saved training state (its other keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in saved.items() if k in names})
        state.epoch_sums = torch.as_tensor(state.epoch_sums, dtype=torch.float64).to(device)
        return state

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch = 0
        self.epoch_sums.zero_()


__all__ = ["LoopState"]

"""What a run tells the person watching it: a progress bar, metrics.jsonl, TensorBoard, summary.json (the figures drawn
from metrics.jsonl afterwards, curves.png and report.html, are vitkit.viz's).

Only rank 0 writes. The bar (tqdm) shows loss, accuracy, lr, img/s and the ETA on a terminal; elsewhere (CI, a log
file, ``nohup``) it becomes one plain line per logging step, because carriage-return bars make unreadable logs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from ..utils.fileio import atomic_write_text
from .config import LogConfig


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or the process's resident memory on a CPU (the closest thing to a peak)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return psutil.Process().memory_info().rss / 2**20


def block_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """Gradient norm per top-level module, with numbered children split out ('blocks.0', 'blocks.1', ... 'head').

    Uses only parameter names, so it works for any architecture; a vanishing or exploding block shows at a glance.
    """
    sums: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        parts = name.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        sums[key] = sums.get(key, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {k: math.sqrt(v) for k, v in sums.items()}


class Monitor:
    def __init__(self, run_dir: Path | None, cfg: LogConfig, enabled: bool, resume_step: int | None = None):
        """``run_dir`` None or ``enabled`` False (ranks > 0) makes every method a no-op but keeps the interface.

        ``resume_step``: continuing a run from that optimizer step; records logged after it (by the interrupted
        process, which will redo those steps) are dropped so metrics.jsonl and the curves hold each step once.
        """
        self.cfg = cfg
        self.enabled = enabled and run_dir is not None
        self.run_dir = run_dir
        self.bar = None
        self.writer = None
        self.history: list[dict[str, Any]] = []
        self._jsonl = None
        mode = cfg.progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode = mode
        if not self.enabled:
            return
        path = run_dir / "metrics.jsonl"
        if resume_step is not None and path.exists():  # keep the history written before the interruption
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            self.history = [r for r in map(json.loads, lines) if r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.history))
        self._jsonl = open(path, "a", buffering=1)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))

    # --- per epoch progress -----------------------------------------------------------------------------------------

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        self.epoch_label = f"epoch {epoch + 1}/{epochs}"
        if self.enabled and self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=self.epoch_label, unit="step", dynamic_ncols=True,
                            leave=True)

    def track(self, batches, label: str) -> _Tracked:
        """``batches`` (a loader) with progress shown: a bar on a terminal, else a line at every 10% (a long
        evaluation, such as the final test pass, otherwise looks like a hang)."""
        return _Tracked(batches, label, self if self.enabled and self.mode != "none" else None)

    def step(self, n: int = 1, postfix: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # --- records ----------------------------------------------------------------------------------------------------

    def log(self, record: dict[str, Any], step: int, line: bool = False) -> None:
        """One record to metrics.jsonl and TensorBoard; ``line`` also prints it in plain mode."""
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        self.history.append(record)
        self._jsonl.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("time", "step", "epoch"):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, step)
                elif isinstance(value, dict):  # per-block grad norms
                    for sub, v in value.items():
                        self.writer.add_scalar(f"{key}/{sub}", v, step)
        if line and self.mode == "plain":
            shown = {k: v for k, v in record.items() if k not in ("time", "kind") and not isinstance(v, dict)}
            self.print(f"{self.epoch_label}  " + "  ".join(f"{k} {_short(v)}" for k, v in shown.items()))

    def print(self, text: str) -> None:
        if not self.enabled or self.mode == "none":
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    # --- the end ----------------------------------------------------------------------------------------------------

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.close()

    def close(self) -> None:
        self.end_epoch()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


class _Tracked:
    def __init__(self, batches, label: str, monitor: Monitor | None) -> None:
        self.batches, self.label, self.monitor = batches, label, monitor

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        if self.monitor is None:
            yield from self.batches
            return
        total, t0 = len(self.batches), time.perf_counter()
        if self.monitor.mode == "bar":
            from tqdm import tqdm

            yield from tqdm(self.batches, total=total, desc=self.label, unit="batch", dynamic_ncols=True, leave=False)
            return
        marks = {math.ceil(total * k / 10) for k in range(1, 11)}
        for i, batch in enumerate(self.batches, 1):
            yield batch
            if i in marks:
                self.monitor.print(f"{self.label}: {i}/{total} batches, {time.perf_counter() - t0:.0f} s")


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


__all__ = ["Monitor", "peak_memory_mb", "block_grad_norms"]

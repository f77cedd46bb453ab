"""Matplotlib figures without pyplot: an Agg canvas per figure, so drawing never touches a display or global state."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..utils.fileio import atomic_path


def new_figure(layout: str | None = "constrained", **kwargs: Any) -> Figure:
    """A figure (by default with a constrained layout: colour bars and titles get their room); Agg renders it."""
    return Figure(layout=layout, **kwargs)


def save_png(fig: Figure, path: str | Path | None = None, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, also written atomically to ``path`` if given."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    data = buffer.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data


def plot_curves(history: list[dict[str, Any]], path: str | Path | None = None) -> bytes:
    """Loss, accuracy and learning rate against the optimizer step, train and validation: a run's metrics.jsonl
    records (``kind`` step / epoch) as one PNG."""
    steps = [r for r in history if r.get("kind") == "step"]
    epochs = [r for r in history if r.get("kind") == "epoch"]
    fig = new_figure(layout="tight", figsize=(15, 4))
    axes = fig.subplots(1, 3)
    panels = (("loss", ("train_loss", "val_loss")), ("accuracy (%)", ("train_acc1", "val_acc1", "val_ema_acc1")))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            source = steps if key.startswith("train") and any(key in r for r in steps) else epochs
            points = [(r["step"], r[key]) for r in source if key in r]
            if points:
                ax.plot(*zip(*points), label=key, marker="o" if source is epochs else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.legend()
        ax.grid(alpha=0.3)
    lr = [(r["step"], r["lr"]) for r in steps if "lr" in r]
    if lr:
        axes[2].plot(*zip(*lr))
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("optimizer step")
    axes[2].grid(alpha=0.3)
    return save_png(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path | None = None) -> bytes:
    """Row-normalised confusion matrix as a PNG (true class down, predicted class across, counts in the cells)."""
    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = min(4 + 0.4 * n, 30)
    fig = new_figure(layout="tight", figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return save_png(fig, path)


__all__ = ["new_figure", "save_png", "plot_curves", "plot_confusion"]

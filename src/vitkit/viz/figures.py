"""Matplotlib figures without pyplot: an Agg canvas per figure, so drawing never touches a display or global state."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

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


__all__ = ["new_figure", "save_png"]

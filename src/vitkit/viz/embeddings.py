"""What a ViT learned before its first block: position-embedding similarity and the patch-embedding filters.

Both pictures are the ViT paper's Figure 7: each patch position's cosine similarity to every other position (a
learned embedding recovers the 2D grid), and the first principal components of the linear patch projection (they
look like the low-frequency bases of a CNN's first layer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.navit import NaViT
from .attention import set_resolution
from .figures import new_figure, save_png


def position_embedding_grid(model: nn.Module) -> tuple[torch.Tensor, tuple[int, int]]:
    """The patch positions' embeddings (h*w, D), row-major, and the grid (h, w); prefix tokens left out."""
    arch = model.arch
    if isinstance(model, NaViT):  # factorized: position (r, c) gets row[r] + col[c]
        size = model.config.get("img_size") or [model.max_grid * model.patch_size] * 2
        h, w = (min(int(s) // model.patch_size, model.max_grid) for s in size)
        emb = model.pos_embed_row[:h, None, :] + model.pos_embed_col[None, :w, :]
        return emb.reshape(h * w, -1).detach().float().cpu(), (h, w)
    grid = tuple(model.patch_embed.grid_size)
    if getattr(model, "pos_embed", None) is not None:
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        emb = model.pos_embed[0, prefix:]
    elif getattr(model, "pos_embed_kind", "") == "sincos2d":
        emb = model.pos_embed_fixed[0]
    else:
        rope = " (it uses rotary embeddings: relative positions inside attention)" if model.config.get("rope") else ""
        raise ValueError(f"{arch} model has no absolute position embedding (pos_embed="
                         f"{getattr(model, 'pos_embed_kind', None)!r}){rope}; there is nothing to draw")
    if emb.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"position embedding has {emb.shape[0]} patch entries but the grid is {grid[0]}x{grid[1]}")
    return emb.detach().float().cpu(), grid


def position_similarity(model: nn.Module) -> torch.Tensor:
    """Cosine similarity of every patch position with every other: (h, w, h, w); [i, j] is the map of patch (i, j)."""
    emb, (h, w) = position_embedding_grid(model)
    unit = F.normalize(emb, dim=-1)
    return (unit @ unit.T).reshape(h, w, h, w)


def plot_position_similarity(similarity: torch.Tensor, path: str | Path | None = None, title: str = "",
                             dpi: int = 100) -> bytes:
    """The ViT paper's grid of small maps: tile (i, j) shows patch (i, j)'s similarity to every position.

    Drawn as one mosaic image (tiles separated by a blank line) rather than h*w axes, so a 24x24 grid stays fast.
    """
    h, w = similarity.shape[:2]
    mosaic = torch.full((h * (h + 1) - 1, w * (w + 1) - 1), float("nan"))
    for i in range(h):
        for j in range(w):
            mosaic[i * (h + 1): i * (h + 1) + h, j * (w + 1): j * (w + 1) + w] = similarity[i, j]
    side = min(12.0, 3.0 + 0.35 * max(h, w))
    fig = new_figure(figsize=(side * w / max(h, w) + 1.6, side * h / max(h, w) + 0.8))
    ax = fig.add_subplot()
    cmap = _cmap("viridis")
    im = ax.imshow(mosaic.numpy(), cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in range(w)], [str(j + 1) for j in range(w)], fontsize=7)
    ax.set_yticks([i * (h + 1) + (h - 1) / 2 for i in range(h)], [str(i + 1) for i in range(h)], fontsize=7)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="cosine similarity")
    ax.set_title(title or "position embedding similarity")
    return save_png(fig, path, dpi=dpi)


def patch_filters(model: nn.Module) -> torch.Tensor:
    """The patch projection as pixel filters (D, C, p, p)."""
    arch = model.arch
    if isinstance(model, NaViT):  # Linear over (row, col, channel)-flattened patches
        p, c = model.patch_size, model.config.get("in_chans", 3)
        w = model.patch_embed.weight
        return w.reshape(w.shape[0], p, p, c).permute(0, 3, 1, 2).detach().float().cpu()
    embed = getattr(model, "patch_embed", None)
    if embed is None or getattr(embed, "backbone", None) is not None:
        raise ValueError(f"{arch} model embeds patches of a CNN's feature maps, not of pixels: its patch projection "
                         "has no picture to show")
    return embed.proj.weight.detach().float().cpu()


def filter_components(model: nn.Module, count: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` principal components of the patch filters (k, C, p, p) and their variance share (k,).

    PCA over the D filters (mean filter removed); each component's sign is fixed so that its largest entry is
    positive, which makes the picture deterministic. Fewer than ``count`` come back if the filters span fewer
    directions.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    filters = patch_filters(model)
    d, c, ph, pw = filters.shape
    flat = filters.reshape(d, -1).double()
    _, s, vh = torch.linalg.svd(flat - flat.mean(0, keepdim=True), full_matrices=False)
    share = s**2 / (s**2).sum().clamp(min=1e-30)
    k = min(count, int((share > 1e-12).sum()))  # directions without variance are numerical noise, not components
    comps = vh[:k]
    comps = comps * torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    share = share[:k]
    return comps.reshape(k, c, ph, pw).float(), share.float()


def plot_filter_components(components: torch.Tensor, share: torch.Tensor, path: str | Path | None = None,
                           title: str = "", dpi: int = 100) -> bytes:
    """A grid of components. RGB filters: each component min-max scaled to colours (no colour bar: the colours
    are the data); other channel counts: the channel mean on a shared diverging scale with a colour bar."""
    k, c = components.shape[:2]
    cols = min(7, k)
    rows = math.ceil(k / cols)
    fig = new_figure(figsize=(1.5 * cols + (1.2 if c != 3 else 0.3), 1.6 * rows + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = float(components.abs().max()) or 1.0
    im = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        comp = components[i]
        if c == 3:
            lo, hi = comp.min(), comp.max()
            ax.imshow(((comp - lo) / (hi - lo).clamp(min=1e-12)).permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            im = ax.imshow(comp.mean(0).numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"PC {i + 1} ({100 * float(share[i]):.1f}%)", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.04, pad=0.02, label="filter weight")
    fig.suptitle(title or f"patch-embedding filters: first {k} principal components (variance share)")
    return save_png(fig, path, dpi=dpi)


def write_position_similarity(model: nn.Module, out_dir: str | Path, *, label: str = "",
                              size: Sequence[int] | None = None, dpi: int = 100) -> Path:
    """``out_dir/posembed.png``: :func:`plot_position_similarity` of ``model``, titled with ``label`` (e.g. the
    checkpoint's name). ``size`` (H, W): draw the embedding resampled to that input size (in place)."""
    if size:
        set_resolution(model, size)
    similarity = position_similarity(model)
    h, w = similarity.shape[:2]
    dst = Path(out_dir) / "posembed.png"
    prefix = f"{label}: " if label else ""
    plot_position_similarity(similarity, dst, title=f"{prefix}position embedding similarity ({h}x{w} patches)",
                             dpi=dpi)
    return dst


def write_filter_components(model: nn.Module, out_dir: str | Path, *, count: int = 28, label: str = "",
                            dpi: int = 100) -> Path:
    """``out_dir/filters.png``: the first ``count`` principal components of the patch-embedding filters
    (:func:`filter_components`), titled with ``label`` and the share of variance they hold."""
    components, share = filter_components(model, count)
    dst = Path(out_dir) / "filters.png"
    prefix = f"{label}: " if label else ""
    plot_filter_components(components, share, dst, title=f"{prefix}patch-embedding filters, first {len(share)} "
                           f"principal components ({100 * float(share.sum()):.0f}% of variance)", dpi=dpi)
    return dst


def _cmap(name: str):
    """A copy of a colour map whose NaN (the mosaic's separators) is white."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="white")


__all__ = [
    "position_embedding_grid", "position_similarity", "plot_position_similarity", "patch_filters",
    "filter_components", "plot_filter_components", "write_filter_components", "write_position_similarity",
]

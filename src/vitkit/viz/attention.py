"""Where a ViT looks: attention rollout (Abnar & Zuidema 2020) and the last layer's per-head attention.

The probabilities come from the blocks' explicit softmax(QK^T) path (``forward_with_attention``), never from the fused
SDPA kernel the model was trained with, so ``attention_maps`` runs both and refuses to draw if their logits disagree.
The map is read from the tokens the classifier reads: the class token, DeiT's class and distillation tokens (their
heads are averaged), or the mean over the patch tokens for a GAP model. Register and other prefix tokens take part
in the rollout but are dropped from the drawn map; the share of attention they keep is reported beside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.decode import BadImageError, read_many_rgb
from ..infer.preprocess import InferenceSpec
from ..models.deit import DistilledVisionTransformer
from ..models.navit import NaViT
from ..models.vit import VisionTransformer

HEAD_FUSIONS = ("mean", "max", "min")


class UnsupportedModelError(ValueError, TypeError):
    """A model kind vitkit cannot draw this way (NaViT's packed attention, a fixed input size): the user's choice of
    checkpoint, hence a ValueError; also a TypeError, as it is about the model's type."""


def fuse_heads(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(B, heads, N, N) -> (B, N, N) by the mean, max or min over heads."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"expected attention probabilities (B, heads, N, N), got shape {tuple(attention.shape)}")
    if head_fusion == "mean":
        return attention.mean(dim=1)
    return attention.amax(dim=1) if head_fusion == "max" else attention.amin(dim=1)


def discard_lowest(attention: torch.Tensor, discard_ratio: float) -> torch.Tensor:
    """Zero the smallest ``discard_ratio`` fraction of each (N, N) matrix's entries (ties broken by position).

    The rollout paper's noise filter: weak attention to many tokens adds up to a haze over the whole image.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    drop = int(attention.shape[-1] * attention.shape[-2] * discard_ratio)
    if drop == 0:
        return attention
    flat = attention.flatten(1).clone()
    lowest = flat.topk(drop, dim=1, largest=False).indices
    flat.scatter_(1, lowest, 0.0)
    return flat.view_as(attention)


def attention_rollout(
    attentions: Sequence[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Rollout of per-block attention (each (B, heads, N, N)): R = A_L ... A_1 with A_l = rownorm(0.5 W_l + 0.5 I).

    W_l is block l's attention with heads fused and the lowest entries discarded; the identity stands for the
    residual connection. Row i of R says how much each input token contributes to output token i. (B, N, N).
    """
    if not attentions:
        raise ValueError("attention_rollout needs the attention of at least one block")
    result = None
    for attention in attentions:
        fused = discard_lowest(fuse_heads(attention.float(), head_fusion), discard_ratio)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        a = 0.5 * fused + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def query_weights(model: nn.Module, num_tokens: int) -> torch.Tensor:
    """(N,) weights over the query tokens whose attention the classifier reads (they sum to 1)."""
    prefix = int(model.num_prefix_tokens)
    weights = torch.zeros(num_tokens)
    if model.pooling == "gap":
        weights[prefix:] = 1.0 / (num_tokens - prefix)
    elif isinstance(model, DistilledVisionTransformer):  # logits are the mean of the class- and distillation-token heads
        weights[:2] = 0.5
    else:
        weights[0] = 1.0
    return weights


def _query_label(model: nn.Module) -> str:
    if model.pooling == "gap":
        return "mean over patch tokens"
    return "class + distillation tokens" if isinstance(model, DistilledVisionTransformer) else "class token"


def check_attention_support(model: nn.Module) -> None:
    """Raise a clear error for a model whose attention probabilities vitkit cannot read."""
    if isinstance(model, NaViT):
        raise UnsupportedModelError("NaViT packs several images into one sequence behind a block-diagonal mask; vitkit draws "
                        "attention maps for the ViT family (vit, deit, hybrid) only")
    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(f"{type(model).__name__} is not of the ViT family: vitkit draws attention maps for vit, deit "
                        "and hybrid models only")


@dataclass
class AttentionMaps:
    """Attention of one batch. ``attentions``: per block (B, heads, N, N); ``grid``: the patch grid (h, w)."""

    logits: torch.Tensor
    attentions: list[torch.Tensor]
    grid: tuple[int, int]
    num_prefix_tokens: int
    queries: torch.Tensor  # (N,) weights of the query tokens the classifier reads
    query_label: str
    fused_max_abs_diff: float  # |logits(explicit path) - logits(fused path)|, max over the batch

    def _read(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, N) -> patch map (B, h, w) and the share left on prefix tokens (B,), for the query tokens."""
        row = torch.einsum("n,bnm->bm", self.queries.to(matrix), matrix)
        p = self.num_prefix_tokens
        return row[:, p:].reshape(-1, *self.grid), row[:, :p].sum(-1)

    def rollout(self, head_fusion: str = "mean", discard_ratio: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rollout map over the patches (B, h, w) and the share of the rollout on prefix tokens (B,)."""
        return self._read(attention_rollout(self.attentions, head_fusion, discard_ratio))

    def last_layer_heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Last block's attention per head over the patches (B, heads, h, w) and the prefix share (B, heads)."""
        last = self.attentions[-1].float()
        b, heads, n, _ = last.shape
        maps, prefix = self._read(last.reshape(b * heads, n, n))
        return maps.reshape(b, heads, *self.grid), prefix.reshape(b, heads)


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor, verify: bool = True, tolerance: float = 1e-4) -> AttentionMaps:
    """Every block's attention for a normalised image batch (B, C, H, W), at whatever size the model accepts.

    verify: also run the ordinary (fused SDPA) forward and raise if the explicit path's logits differ by more than
    ``tolerance`` x max(1, |logits|): maps from a path that computes something else would be meaningless.
    """
    check_attention_support(model)
    was_training = model.training
    model.eval()  # dropout and token dropout off; the caller's mode is restored below
    try:
        logits, attentions = model.forward_with_attention(images)
        fused = model(images) if verify else None
    finally:
        model.train(was_training)
    diff = 0.0
    if fused is not None:
        diff = float((fused.float() - logits.float()).abs().max())
        scale = max(1.0, float(fused.float().abs().max()))
        if diff > tolerance * scale:
            raise RuntimeError(f"the explicit attention path's logits differ from the fused forward by {diff:.3g} "
                               f"(allowed {tolerance * scale:.3g}); its attention maps would not describe this model")
    ph, pw = model.patch_embed.patch_size  # a pair for plain and hybrid (total stride) embeddings
    grid = (images.shape[-2] // ph, images.shape[-1] // pw)
    n = attentions[0].shape[-1]
    if n != model.num_prefix_tokens + grid[0] * grid[1]:
        raise RuntimeError(f"attention covers {n} tokens, expected {model.num_prefix_tokens} prefix + "
                           f"{grid[0]}x{grid[1]} patches (is token dropout active?)")
    return AttentionMaps(logits, attentions, grid, int(model.num_prefix_tokens), query_weights(model, n),
                         _query_label(model), diff)


def set_resolution(model: nn.Module, size: Sequence[int]) -> None:
    """Make ``model`` accept (H, W) inputs: resample a learned position embedding in place if needed."""
    size = (int(size[0]), int(size[1]))
    ph, pw = model.patch_embed.patch_size
    if size[0] % ph or size[1] % pw:  # checked first: set_input_size would leave a half-changed model behind
        raise ValueError(f"input size {size[0]}x{size[1]} is not a multiple of patch_size {(ph, pw)}")
    if tuple(model.config.get("img_size", ())) == size or getattr(model, "dynamic_img_size", False):
        return
    if not hasattr(model, "set_input_size"):
        raise UnsupportedModelError(f"{type(model).__name__} cannot change its input size")
    model.set_input_size(size)


def upsample_map(patch_map: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(h, w) patch map -> (H, W) image-sized map (bilinear), for overlays."""
    return F.interpolate(patch_map[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def plot_attention(
    image: torch.Tensor,
    rollout: torch.Tensor,
    heads: torch.Tensor,
    path: str | Path | None = None,
    *,
    title: str = "",
    rollout_label: str = "rollout",
    head_label: str = "last layer",
    prefix_share: float | None = None,
    head_prefix_share: Sequence[float] | None = None,
    dpi: int = 100,
) -> bytes:
    """One figure: the image, the rollout over it, and one small map per head of the last layer.

    image: (C, H, W) float in [0, 1]; rollout: (h, w); heads: (heads, h, w). Returns the PNG bytes (also written to
    ``path`` atomically if given).
    """
    from .figures import new_figure, save_png

    img = image.detach().float().clamp(0, 1).cpu()
    shown = img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy()
    overlay = upsample_map(rollout.cpu(), img.shape[-2:]).numpy()
    num_heads = heads.shape[0]
    cols = math.ceil(math.sqrt(num_heads))
    rows = math.ceil(num_heads / cols)
    # a fixed grid instead of a layout engine: the constrained layout cost more than the drawing (0.6 s a figure)
    fig = new_figure(figsize=(8.6 + 1.45 * cols + 1.2, max(4.0, 1.55 * rows + 1.1)), layout=None)
    grid = fig.add_gridspec(rows, 7, width_ratios=[4, 4, 0.18, 1.0, 1.45 * cols, 0.12, 0.75], left=0.01,
                            right=0.99, top=0.82, bottom=0.04, wspace=0.08, hspace=0.35)
    ax_img, ax_roll = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[:, 1])
    cmap_gray = None if img.shape[0] == 3 else "gray"
    ax_img.imshow(shown, cmap=cmap_gray)
    ax_img.set_title("input", fontsize=9)
    ax_roll.imshow(shown, cmap=cmap_gray)
    im = ax_roll.imshow(overlay, cmap="inferno", alpha=0.6, vmin=float(overlay.min()), vmax=float(overlay.max()))
    share = f"\n({100 * prefix_share:.0f}% on prefix tokens)" if prefix_share is not None else ""
    ax_roll.set_title(f"{rollout_label}{share}", fontsize=8)
    fig.colorbar(im, cax=_bar_axis(fig, grid[:, 2]), label="rollout weight")
    for ax in (ax_img, ax_roll):
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    heads_grid = grid[:, 4].subgridspec(rows, cols, wspace=0.1, hspace=0.35)
    vmin, vmax = float(heads.min()), float(heads.max())  # one scale for all heads: they stay comparable
    for i in range(num_heads):
        ax = fig.add_subplot(heads_grid[i // cols, i % cols])
        ax.axis("off")
        im = ax.imshow(heads[i].cpu().numpy(), cmap="viridis", vmin=vmin, vmax=vmax)
        extra = f" ({100 * head_prefix_share[i]:.0f}% pfx)" if head_prefix_share is not None else ""
        ax.set_title(f"head {i}{extra}", fontsize=7)
    fig.colorbar(im, cax=_bar_axis(fig, grid[:, 5]), label="attention weight")
    box = grid[:, 4].get_position(fig)
    fig.text((box.x0 + box.x1) / 2, box.y1 + 0.07, head_label, ha="center", va="bottom", fontsize=9)
    return save_png(fig, path, dpi=dpi)


@dataclass
class AttentionFigures:
    """What :func:`write_attention_figures` did: (image, PNG) pairs written and (image, reason) pairs skipped."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def write_attention_figures(
    model: nn.Module,
    paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    size: Sequence[int] | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    dpi: int = 100,
    device: str | torch.device = "cpu",
) -> AttentionFigures:
    """One figure per image -- the rollout over it and the last block's heads -- as ``out_dir/attention_<stem>.png``.

    Each image goes through the model's own eval transform; ``size`` (H, W) resamples the position embedding first
    (in place: the model is also moved to ``device`` and left in eval mode). Undecodable images are skipped with
    their reason; images that share a stem (from different folders) get distinct file names.
    """
    model = model.to(device).eval()
    check_attention_support(model)
    spec = InferenceSpec.from_model(model)
    if size:
        set_resolution(model, size)
        spec = dataclasses.replace(spec, img_size=(int(size[0]), int(size[1])))
    transform = spec.transform()
    mean, std = torch.tensor(spec.mean).view(-1, 1, 1), torch.tensor(spec.std).view(-1, 1, 1)
    out_dir, paths = Path(out_dir), [Path(p) for p in paths]
    result, used = AttentionFigures(), set()
    for path, image in zip(paths, read_many_rgb([str(p) for p in paths])):
        if isinstance(image, BadImageError):
            result.skipped.append((path, image.reason))
            continue
        x = transform(image)
        maps = attention_maps(model, x[None].to(device))
        rollout, roll_prefix = maps.rollout(head_fusion, discard_ratio)
        heads, head_prefix = maps.last_layer_heads()
        prob, idx = maps.logits[0].float().softmax(-1).max(-1)
        label = spec.class_names[int(idx)] if spec.class_names else str(int(idx))
        stem = path.stem if path.stem not in used else f"{path.stem}_{len(result.written)}"
        used.add(path.stem)
        dst = out_dir / f"attention_{stem}.png"
        plot_attention(
            x * std + mean, rollout[0], heads[0], dst,
            title=f"{path.name}: {label} ({100 * float(prob):.1f}%), {x.shape[-2]}x{x.shape[-1]} input",
            rollout_label=f"rollout ({head_fusion} over heads, discard {discard_ratio:g}), {maps.query_label}",
            head_label=f"last block, per head ({maps.query_label})", prefix_share=float(roll_prefix[0]),
            head_prefix_share=head_prefix[0].tolist() if maps.num_prefix_tokens > 1 else None, dpi=dpi)
        result.written.append((path, dst))
    return result


def _bar_axis(fig, cell):
    """A colour-bar axis in the middle 70% of a grid cell's height."""
    box = cell.get_position(fig)
    return fig.add_axes((box.x0, box.y0 + 0.15 * box.height, box.width, 0.7 * box.height))


__all__ = [
    "HEAD_FUSIONS", "AttentionFigures", "AttentionMaps", "UnsupportedModelError", "attention_maps",
    "attention_rollout", "fuse_heads", "discard_lowest", "query_weights", "check_attention_support",
    "set_resolution", "upsample_map", "plot_attention", "write_attention_figures",
]

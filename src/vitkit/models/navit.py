"""NaViT, "Patch n' Pack" (Dehghani et al. 2023): images at their own resolution and aspect ratio, packed together.

Each image becomes its own number of patch tokens; ``pack_images`` (or the ``PackCollate`` data-loader collate) puts
the tokens of several images into fixed-length sequences, first fit, with optional per-image token dropout. Inside
the model a block-diagonal mask (``F.scaled_dot_product_attention`` with a boolean mask) keeps every image's
attention to its own tokens, position embeddings are factorized (a learned row table + a learned column table, so
any grid up to ``max_grid`` works), and pooling averages each image's tokens separately. The result is the same, per
image, as running the image alone (tested); padding costs nothing but its share of the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .constants import CIFAR10_MEAN, CIFAR10_STD
from .contract import VitkitModel
from .layers import Block, to_2tuple
from .registry import register_arch, register_model


@dataclass
class PackedBatch:
    """Sequences of packed patches. S sequences of length L holding at most K images each.

    patches: (S, L, C*p*p) flattened patches (row, col, channel order), zero for padding
    positions: (S, L, 2) each token's (row, col) in its image's patch grid
    slots: (S, L) which image of the sequence a token belongs to (0..K-1), -1 for padding
    image_index: (S, K) the position of that image in the input list, -1 for an empty slot
    """

    patches: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    image_index: torch.Tensor

    @property
    def num_images(self) -> int:
        return int((self.image_index >= 0).sum())

    def to(self, device, non_blocking: bool = False) -> PackedBatch:
        return PackedBatch(*(t.to(device, non_blocking=non_blocking) for t in
                             (self.patches, self.positions, self.slots, self.image_index)))


def image_to_patches(image: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) -> (N, p*p*C) patches and (N, 2) grid positions, row-major."""
    if image.ndim != 3:
        raise ValueError(f"expected an image (C, H, W), got shape {tuple(image.shape)}")
    c, h, w = image.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}; resize or crop it first")
    gh, gw = h // p, w // p
    patches = image.reshape(c, gh, p, gw, p).permute(1, 3, 2, 4, 0).reshape(gh * gw, p * p * c)
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return patches, torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def pack_images(
    images: Sequence[torch.Tensor],
    patch_size: int,
    max_seq_len: int,
    token_keep_rate: float = 1.0,
    generator: torch.Generator | None = None,
) -> PackedBatch:
    """Pack images of any sizes into sequences of ``max_seq_len`` tokens (first fit, in the given order).

    token_keep_rate < 1 keeps a random subset of each image's patches (NaViT's token dropout: more images per
    sequence, cheaper steps); positions keep the kept patches' true places.
    """
    if not 0.0 < token_keep_rate <= 1.0:
        raise ValueError(f"token_keep_rate must be in (0, 1], got {token_keep_rate}")
    items = []
    for i, image in enumerate(images):
        patches, pos = image_to_patches(image, patch_size)
        if token_keep_rate < 1.0:
            keep = max(1, int(round(len(patches) * token_keep_rate)))
            idx = torch.randperm(len(patches), generator=generator)[:keep].sort().values
            patches, pos = patches[idx], pos[idx]
        if len(patches) > max_seq_len:
            raise ValueError(f"image {i} of size {tuple(image.shape[1:])} has {len(patches)} patches, more than "
                             f"max_seq_len={max_seq_len}; raise max_seq_len or shrink the image")
        items.append((patches, pos))
    fill: list[int] = []  # tokens used per sequence
    members: list[list[int]] = []  # image indices per sequence
    for i, (patches, _) in enumerate(items):
        for s, used in enumerate(fill):
            if used + len(patches) <= max_seq_len:
                fill[s] += len(patches)
                members[s].append(i)
                break
        else:
            fill.append(len(patches))
            members.append([i])
    dim = items[0][0].shape[1] if items else 0
    num_seq, max_k = len(members), max((len(m) for m in members), default=0)
    out = PackedBatch(
        patches=torch.zeros(num_seq, max_seq_len, dim, dtype=images[0].dtype if images else torch.float32),
        positions=torch.zeros(num_seq, max_seq_len, 2, dtype=torch.long),
        slots=torch.full((num_seq, max_seq_len), -1, dtype=torch.long),
        image_index=torch.full((num_seq, max_k), -1, dtype=torch.long),
    )
    for s, group in enumerate(members):
        start = 0
        for k, i in enumerate(group):
            patches, pos = items[i]
            end = start + len(patches)
            out.patches[s, start:end], out.positions[s, start:end], out.slots[s, start:end] = patches, pos, k
            out.image_index[s, k] = i
            start = end
    return out


class PackCollate:
    """DataLoader collate: a list of (image (C, H, W) of any size, label) -> (PackedBatch, labels in image order)."""

    def __init__(self, patch_size: int, max_seq_len: int, token_keep_rate: float = 1.0, seed: int = 0):
        self.patch_size, self.max_seq_len, self.token_keep_rate = patch_size, max_seq_len, token_keep_rate
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[PackedBatch, torch.Tensor]:
        images, labels = zip(*batch)
        packed = pack_images(images, self.patch_size, self.max_seq_len, self.token_keep_rate, self.generator)
        return packed, torch.as_tensor(labels)


@register_arch
class NaViT(VitkitModel):
    arch = "navit"
    embedding_params = ("patch_", "pos_embed", "embed_norm")

    def __init__(
        self,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = True,
        max_grid: int = 64,
        max_seq_len: int = 256,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        img_size: int | Sequence[int] | None = None,
    ):
        """max_grid: the largest patch-grid side the factorized position tables cover (64 x 16 px = 1024 px).
        max_seq_len: the sequence length used when a plain image batch (B, C, H, W) is packed by forward itself.
        img_size: the nominal size of plain batches (what `vitkit train` passes); any size up to max_grid works."""
        super().__init__()
        self.config: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if img_size is not None:
            side = max(to_2tuple(img_size))
            if side > max_grid * patch_size:
                raise ValueError(f"img_size {img_size} needs more than max_grid={max_grid} patches of {patch_size} px")
            self.config["img_size"] = list(to_2tuple(img_size))
        self.num_classes, self.num_features, self.embed_dim = num_classes, embed_dim, embed_dim
        self.patch_size, self.max_grid, self.max_seq_len = patch_size, max_grid, max_seq_len
        self.patch_norm = nn.LayerNorm(patch_size * patch_size * in_chans, eps=norm_eps)
        self.patch_embed = nn.Linear(patch_size * patch_size * in_chans, embed_dim)
        self.pos_embed_row = nn.Parameter(torch.randn(max_grid, embed_dim) * 0.02)
        self.pos_embed_col = nn.Parameter(torch.randn(max_grid, embed_dim) * 0.02)
        self.embed_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, qk_norm, drop_path=dpr[i], norm_eps=norm_eps)
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:  # the rest of the model contract is VitkitModel's defaults
        return {"pos_embed_row", "pos_embed_col"}

    def forward_features(self, packed: PackedBatch) -> torch.Tensor:
        """(S, L, D) token features; attention never crosses from one image (or the padding) to another."""
        if packed.positions.numel() and int(packed.positions.max()) >= self.max_grid:
            raise ValueError(f"a patch grid exceeds max_grid={self.max_grid} patches per side; build the model "
                             "with a larger max_grid")
        x = self.patch_embed(self.patch_norm(packed.patches))
        x = x + self.pos_embed_row[packed.positions[..., 0]] + self.pos_embed_col[packed.positions[..., 1]]
        x = self.embed_norm(x)
        mask = (packed.slots[:, :, None] == packed.slots[:, None, :]).unsqueeze(1)  # (S, 1, L, L) block-diagonal
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, attn_mask=mask)
        return self.norm(x)

    def pool(self, x: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
        """Per-image mean of its tokens, returned in the order the images were given: (num_images, D)."""
        k = packed.image_index.shape[1]
        member = (packed.slots[:, None, :] == torch.arange(k, device=x.device)[None, :, None]).to(x.dtype)  # (S,K,L)
        pooled = (member @ x) / member.sum(-1, keepdim=True).clamp(min=1)  # (S, K, D)
        valid = packed.image_index.reshape(-1) >= 0
        order = packed.image_index.reshape(-1)[valid].argsort()
        return pooled.reshape(-1, x.shape[-1])[valid][order]

    def forward(self, packed: PackedBatch | torch.Tensor) -> torch.Tensor:
        """Logits per image. A plain batch (B, C, H, W) is packed here, one image per sequence."""
        if isinstance(packed, torch.Tensor):
            if packed.ndim != 4:
                raise ValueError(f"expected a PackedBatch or an image batch (B, C, H, W), got {tuple(packed.shape)}")
            n = (packed.shape[-2] // self.patch_size) * (packed.shape[-1] // self.patch_size)
            packed = pack_images(list(packed), self.patch_size, n).to(packed.device)
        x = self.pool(self.forward_features(packed), packed)
        return self.head(self.head_drop(x))


register_model("navit_tiny_patch16", arch="navit", kwargs=dict(patch_size=16, embed_dim=192, depth=12, num_heads=3,
               max_grid=64, max_seq_len=256), notes="NaViT-Ti/16: any resolution up to 1024 px per side",
               reference_size=224)
register_model("navit_tiny_patch4_32", arch="navit", kwargs=dict(patch_size=4, embed_dim=192, depth=12, num_heads=3,
               num_classes=10, max_grid=16, max_seq_len=128), mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
               notes="NaViT-Ti/4 for CIFAR-sized images (up to 64 px)", reference_size=32)


__all__ = ["NaViT", "PackedBatch", "PackCollate", "pack_images", "image_to_patches"]

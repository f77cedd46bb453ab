"""CrossViT (Chen et al. 2021, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image Classification").

Two ViT branches look at the same image through different patch sizes: a small-patch branch (many tokens, narrow)
and a large-patch branch (few tokens, wide). Each multi-scale block runs a few ordinary transformer blocks per
branch (the foundation's ``Block``), then fuses the branches by *cross-attention on class tokens*: one branch's class
token, projected to the other branch's width, attends to the other branch's patch tokens and is projected back. Only
one query per branch, so fusion costs O(N) rather than O(N^2). The two classifier heads' logits are averaged.

timm's names (``crossvit_*_240``) take a 240 px input: the small branch cuts 12 px patches from it, the large one
16 px patches from the image resized to 224 px (``img_scale``), both giving whole grids (20x20 and 14x14). The
"dagger" models replace the patch projection by three convolutions (``multi_conv``). Parameter names are timm's
``crossvit.py`` (whose ``pos_embed_0`` is the original checkpoints' ``pos_embed.0``; the importer accepts both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .constants import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from .contract import VitkitModel
from .layers import Block, DropPath, PatchEmbed, scaled_dot_product_attention, to_2tuple
from .registry import register_arch, register_model

POOLING_KINDS = ("cls", "gap")


class MultiConvPatchEmbed(nn.Module):
    """The dagger models' patch embedding: 7x7/4 conv, then 3x3 convs to a total stride of 12 or 16, with ReLUs."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if patch_size not in (12, 16):
            raise ValueError(f"multi_conv patch embedding exists for patch sizes 12 and 16, got {patch_size}")
        self.img_size, self.patch_size = img_size, (patch_size, patch_size)
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        second = dict(kernel_size=3, stride=3, padding=0) if patch_size == 12 else dict(kernel_size=3, stride=2, padding=1)
        third = dict(kernel_size=3, stride=1, padding=1) if patch_size == 12 else dict(kernel_size=3, stride=2, padding=1)
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 4, kernel_size=7, stride=4, padding=3), nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim // 4, embed_dim // 2, **second), nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim // 2, embed_dim, **third),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected input size {self.img_size[0]}x{self.img_size[1]}, got shape {tuple(x.shape)}")
        return self.proj(x)


class CrossAttention(nn.Module):
    """The first token (a class token) queries all tokens; returns that one updated token, (B, 1, D)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop_p = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, head_dim)
            return t.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.wq(x[:, :1])), heads(self.wk(x)), heads(self.wv(x))
        out = scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop_p if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, 1, c)))


class CrossAttentionBlock(nn.Module):
    """class token + cross-attention(norm(tokens)): pre-norm and residual, on the class token only (no MLP)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = CrossAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.drop_path(self.attn(self.norm1(x)))


def _projection(in_dim: int, out_dim: int, norm_eps: float) -> nn.Sequential:
    """LayerNorm -> GELU -> Linear: moves a class token between the branches' widths."""
    return nn.Sequential(nn.LayerNorm(in_dim, eps=norm_eps), nn.GELU(), nn.Linear(in_dim, out_dim))


class MultiScaleBlock(nn.Module):
    """Per branch ``depth[b]`` transformer blocks, then class-token fusion between each branch and the next.

    ``depth`` is (blocks of branch 0, blocks of branch 1, ..., fusion blocks); 0 fusion blocks means one fusion
    block that is not wrapped in a Sequential (the published checkpoints' layout, kept by timm).
    """

    def __init__(self, dims: Sequence[int], depth: Sequence[int], num_heads: Sequence[int],
                 mlp_ratio: Sequence[float], qkv_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Sequence[float] = (), norm_eps: float = 1e-6):
        super().__init__()
        n = self.num_branches = len(dims)
        fusion_depth = depth[-1]
        self.blocks = nn.ModuleList([
            nn.Sequential(*[
                Block(dims[b], num_heads[b], mlp_ratio[b], qkv_bias, proj_drop=proj_drop, attn_drop=attn_drop,
                      drop_path=drop_path[i], norm_eps=norm_eps)
                for i in range(depth[b])
            ])
            for b in range(n)
        ])
        self.projs = nn.ModuleList([_projection(dims[b], dims[(b + 1) % n], norm_eps) for b in range(n)])

        def fusion_block(b: int) -> CrossAttentionBlock:
            other = (b + 1) % n
            return CrossAttentionBlock(dims[other], num_heads[other], qkv_bias, proj_drop, attn_drop, drop_path[-1],
                                       norm_eps)

        self.fusion = nn.ModuleList([
            fusion_block(b) if fusion_depth == 0 else nn.Sequential(*[fusion_block(b) for _ in range(fusion_depth)])
            for b in range(n)
        ])
        self.revert_projs = nn.ModuleList([_projection(dims[(b + 1) % n], dims[b], norm_eps) for b in range(n)])

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [blocks(x) for blocks, x in zip(self.blocks, xs)]
        outs = []
        for b in range(self.num_branches):
            other = xs[(b + 1) % self.num_branches]
            cls = self.projs[b](xs[b][:, :1])  # this branch's class token, in the other branch's width ...
            cls = self.fusion[b](torch.cat([cls, other[:, 1:]], dim=1))  # ... attends to the other's patches
            outs.append(torch.cat([self.revert_projs[b](cls), xs[b][:, 1:]], dim=1))
        return outs


@register_arch
class CrossViT(VitkitModel):
    arch = "crossvit"
    embedding_params = ("patch_embed", "pos_embed", "cls_token")

    def __init__(
        self,
        img_size: int | Sequence[int] = 240,
        img_scale: Sequence[float] = (1.0, 224 / 240),
        patch_size: Sequence[int] = (12, 16),
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (96, 192),
        depth: Sequence[Sequence[int]] = ((1, 4, 0), (1, 4, 0), (1, 4, 0)),
        num_heads: Sequence[int] = (3, 3),
        mlp_ratio: Sequence[float] = (4.0, 4.0, 1.0),
        multi_conv: bool = False,
        crop_scale: bool = False,
        qkv_bias: bool = True,
        pooling: str = "cls",
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        """
        Args not obvious from their names:
            img_scale: per branch, the factor the input is resized by (bicubic) before cutting its patches.
            patch_size, embed_dim, num_heads: one entry per branch; mlp_ratio one per branch (+ an unused last one,
                timm's layout).
            depth: one (branch 0 blocks, branch 1 blocks, fusion blocks) triple per multi-scale block.
            multi_conv: the dagger models' convolutional patch embedding.
            crop_scale: reach a branch's size by a centre crop instead of resizing, where it is smaller.
            pooling: 'cls' reads each branch's class token, 'gap' averages its patch tokens.
        """
        super().__init__()
        self.config: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config.update(img_size=list(to_2tuple(img_size)), img_scale=list(img_scale), patch_size=list(patch_size),
                           embed_dim=list(embed_dim), depth=[list(d) for d in depth], num_heads=list(num_heads),
                           mlp_ratio=list(mlp_ratio))
        n = self.num_branches = len(patch_size)
        if not (len(img_scale) == len(embed_dim) == len(num_heads) == n):
            raise ValueError(f"img_scale, patch_size, embed_dim and num_heads need one entry per branch ({n})")
        if len(mlp_ratio) < n or any(len(d) != n + 1 for d in depth):
            raise ValueError(f"mlp_ratio needs {n} entries and each depth entry {n + 1} (branch blocks + fusion), got "
                             f"{list(mlp_ratio)} and {[list(d) for d in depth]}")
        if pooling not in POOLING_KINDS:
            raise ValueError(f"pooling must be one of {POOLING_KINDS}, got {pooling!r}")
        self.img_size = to_2tuple(img_size)
        self.img_size_scaled = [tuple(int(side * s) for side in self.img_size) for s in img_scale]
        self.crop_scale = crop_scale
        self.pooling = pooling
        self.num_classes = num_classes
        self.embed_dim = tuple(embed_dim)
        self.num_features = sum(embed_dim)

        self.patch_embed = nn.ModuleList([
            MultiConvPatchEmbed(size, p, in_chans, d) if multi_conv else PatchEmbed(size, p, in_chans, d)
            for size, p, d in zip(self.img_size_scaled, patch_size, embed_dim)
        ])
        for b, (embed, d) in enumerate(zip(self.patch_embed, embed_dim)):
            self.register_parameter(f"pos_embed_{b}", nn.Parameter(torch.zeros(1, 1 + embed.num_patches, d)))
            self.register_parameter(f"cls_token_{b}", nn.Parameter(torch.zeros(1, 1, d)))
        self.pos_drop = nn.Dropout(pos_drop_rate)

        # stochastic depth rises over all blocks; each multi-scale block takes the rates of its longest branch and
        # its fusion (timm's bookkeeping, kept so that drop_path_rate means the same)
        total = sum(sum(d[-2:]) for d in depth)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.blocks = nn.ModuleList()
        start = 0
        for d in depth:
            span = max(d[:-1]) + d[-1]
            self.blocks.append(MultiScaleBlock(embed_dim, d, num_heads, mlp_ratio, qkv_bias, proj_drop_rate,
                                               attn_drop_rate, rates[start:start + span], norm_eps))
            start += span
        self.norm = nn.ModuleList([nn.LayerNorm(d, eps=norm_eps) for d in embed_dim])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._new_heads(num_classes)
        self.init_weights()

    def _new_heads(self, num_classes: int, device=None) -> nn.ModuleList:
        return nn.ModuleList([nn.Linear(d, num_classes, device=device) if num_classes > 0 else nn.Identity()
                              for d in self.embed_dim])

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's: truncated normal (0.02) for tokens, position embeddings and every Linear; zero biases."""
        for b in range(self.num_branches):
            nn.init.trunc_normal_(self.branch_pos_embed(b), std=0.02)
            nn.init.trunc_normal_(self.branch_cls_token(b), std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def branch_pos_embed(self, branch: int) -> nn.Parameter:
        return getattr(self, f"pos_embed_{branch}")

    def branch_cls_token(self, branch: int) -> nn.Parameter:
        return getattr(self, f"cls_token_{branch}")

    # --- the model contract (the rest is VitkitModel's defaults: layer_id counts the multi-scale blocks) -------------
    # set_grad_checkpointing recomputes each multi-scale block (timm refuses; non-reentrant checkpointing takes lists)

    def no_weight_decay(self) -> set[str]:
        return {f"{kind}_{b}" for kind in ("pos_embed", "cls_token") for b in range(self.num_branches)}

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.config["num_classes"] = num_classes
        self.head = self._new_heads(num_classes, self.cls_token_0.device)

    # --- forward ----------------------------------------------------------------------------------------------------

    def _scale(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == size:
            return x
        if self.crop_scale and size[0] <= h and size[1] <= w:
            top, left = int(round((h - size[0]) / 2.0)), int(round((w - size[1]) / 2.0))
            return x[:, :, top:top + size[0], left:left + size[1]]
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)

    def _embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected an image batch (B, C, {self.img_size[0]}, {self.img_size[1]}), got shape "
                             f"{tuple(x.shape)}")
        xs = []
        for b, (embed, size) in enumerate(zip(self.patch_embed, self.img_size_scaled)):
            tokens = embed(self._scale(x, size)).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.branch_cls_token(b).expand(x.shape[0], -1, -1), tokens], dim=1)
            xs.append(self.pos_drop(tokens + self.branch_pos_embed(b)))
        return xs

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per branch, the normalised (B, 1 + N_b, D_b) tokens."""
        xs = self._embed(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                xs = checkpoint(block, xs, use_reentrant=False)
            else:
                xs = block(xs)
        return [norm(t) for norm, t in zip(self.norm, xs)]

    def forward_head(self, xs: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        pooled = [self.head_drop(t[:, 0] if self.pooling == "cls" else t[:, 1:].mean(dim=1)) for t in xs]
        if pre_logits or self.num_classes == 0:
            return torch.cat(pooled, dim=1)
        return torch.stack([head(p) for head, p in zip(self.head, pooled)]).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- registry ------------------------------------------------------------------------------------------------------

CROSSVIT_CONFIGS = {  # timm's: (embed_dim, blocks per branch in each of the 3 multi-scale blocks, heads, mlp_ratio)
    "tiny": ((96, 192), 4, (3, 3), (4.0, 4.0, 1.0)),
    "small": ((192, 384), 4, (6, 6), (4.0, 4.0, 1.0)),
    "base": ((384, 768), 4, (12, 12), (4.0, 4.0, 1.0)),
    "9": ((128, 256), 3, (4, 4), (3.0, 3.0, 1.0)),
    "15": ((192, 384), 5, (6, 6), (3.0, 3.0, 1.0)),
    "18": ((224, 448), 6, (7, 7), (3.0, 3.0, 1.0)),
}


def crossvit_kwargs(size: str, **extra: Any) -> dict[str, Any]:
    dims, blocks, heads, mlp = CROSSVIT_CONFIGS[size]
    return dict(embed_dim=dims, depth=((1, blocks, 0),) * 3, num_heads=heads, mlp_ratio=mlp, **extra)


def _register_crossvits() -> None:
    """Registry entries: timm's names, and a 32 px model (patches 4 and 8)."""
    for size in CROSSVIT_CONFIGS:
        register_model(f"crossvit_{size}_240", arch="crossvit", kwargs=crossvit_kwargs(size, img_size=240),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875, tags=("timm",))
    for size, res in (("9", 240), ("15", 240), ("18", 240), ("15", 408), ("18", 408)):
        scale = 224 / 240 if res == 240 else 384 / 408
        register_model(f"crossvit_{size}_dagger_{res}", arch="crossvit",
                       kwargs=crossvit_kwargs(size, img_size=res, img_scale=(1.0, scale), multi_conv=True),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875 if res == 240 else 1.0, tags=("timm",))
    register_model("crossvit_tiny_patch4_32", arch="crossvit",
                   kwargs=crossvit_kwargs("tiny", img_size=32, img_scale=(1.0, 1.0), patch_size=(4, 8), num_classes=10),
                   mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
                   notes="CrossViT-Ti for CIFAR: 4 px patches (8x8 grid, width 96) and 8 px patches (4x4 grid, width "
                         "192)")


_register_crossvits()


__all__ = ["CrossViT", "CROSSVIT_CONFIGS", "crossvit_kwargs"]

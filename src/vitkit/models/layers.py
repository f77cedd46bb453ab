"""Building blocks shared by every vitkit architecture.

Parameter names follow timm's ``vision_transformer.py`` (``qkv``, ``proj``, ``fc1``, ``ls1.gamma`` ...) so that a timm
state dict maps onto ours with a plain table and users can read either code base with the same vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def to_2tuple(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair (h, w), got {value!r}")
    return value  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """Image to patch tokens with a strided convolution.

    A Conv2d whose kernel and stride both equal the patch size is exactly a linear projection of each flattened patch
    (tests/test_layers.py proves it); the convolution is simply the fastest way to compute it.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        strict_img_size: bool = True,
    ):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        for size, patch in zip(self.img_size, self.patch_size):
            if size % patch:
                raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns a (B, D, H', W') grid; callers flatten it once they know the grid size they need."""
        if x.ndim != 4:
            raise ValueError(f"expected an image batch of shape (B, C, H, W), got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        if c != self.proj.in_channels:
            raise ValueError(f"expected {self.proj.in_channels} input channels, got {c} (input shape {tuple(x.shape)})")
        if self.strict_img_size:
            if (h, w) != self.img_size:
                raise ValueError(
                    f"expected input size {self.img_size[0]}x{self.img_size[1]}, got {h}x{w}; build the model with "
                    f"img_size=({h}, {w}) (the position embedding is resampled on load) or dynamic_img_size=True"
                )
        elif h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused QKV projection.

    The default path calls ``F.scaled_dot_product_attention`` so that PyTorch picks Flash / memory-efficient kernels.
    ``need_weights=True`` runs the explicit softmax(QK^T)V path instead and also returns the probabilities; it computes
    the same function (tested), so attention maps can be read from a model trained with the fused path.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.attn_drop_p = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if need_weights:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else attn + attn_mask
            attn = attn.softmax(dim=-1)
            weights = attn
            x = self.attn_drop(attn) @ v
        else:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop_p if self.training else 0.0
            )
        x = x.transpose(1, 2).reshape(b, n, c)
        x = self.proj_drop(self.proj(x))
        return (x, weights) if need_weights else x


class LayerScale(nn.Module):
    """Per-channel residual scaling (CaiT); lets deep models start close to identity."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples, rescaling the survivors."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop, norm_eps)
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x

    def forward_with_attention(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, weights = self.attn(self.norm1(x), attn_mask=attn_mask, need_weights=True)
        x = x + self.drop_path1(self.ls1(out))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, weights


class PatchDropout(nn.Module):
    """Token dropout (FLIP / NaViT): keep a random subset of patch tokens while training; prefix tokens always stay.

    Fewer tokens make each step cheaper, at the price of noisier training; it is off at eval time.
    """

    def __init__(self, keep_prob: float = 1.0, num_prefix_tokens: int = 1):
        super().__init__()
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"token keep fraction must be in (0, 1], got {keep_prob}")
        self.keep_prob = keep_prob
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep_prob >= 1.0:
            return x
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        b, n, _ = patches.shape
        keep = max(1, int(round(n * self.keep_prob)))
        idx = torch.rand(b, n, device=x.device).argsort(dim=1)[:, :keep]
        patches = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([prefix, patches], dim=1)


# --- position embeddings -------------------------------------------------------------------------------------------


def sincos_2d_pos_embed(grid_size: Sequence[int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos embedding of big_vision's ``posemb_sincos_2d``: (1, H*W, dim), row-major over (h, w)."""
    if dim % 4:
        raise ValueError(f"sincos2d position embedding needs embed_dim divisible by 4, got {dim}")
    h, w = grid_size
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    omega = torch.arange(dim // 4, dtype=torch.float32) / (dim // 4 - 1 if dim > 4 else 1)
    omega = 1.0 / temperature**omega
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    pe = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
    return pe.unsqueeze(0)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_size: Sequence[int],
    old_size: Sequence[int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize a learned (1, prefix + H*W, D) position embedding to a new grid, keeping the prefix tokens as they are.

    Used when fine-tuning at another resolution (224 -> 384) and, per forward, for dynamic image sizes.
    """
    if pos_embed.ndim != 3:
        raise ValueError(f"position embedding must be (1, N, D), got shape {tuple(pos_embed.shape)}")
    new_size = to_2tuple(new_size)
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(math.sqrt(num_grid))
        if side * side != num_grid:
            raise ValueError(
                f"cannot infer a square grid from {num_grid} position tokens; pass old_size=(h, w) explicitly"
            )
        old_size = (side, side)
    old_size = to_2tuple(old_size)
    if old_size[0] * old_size[1] != num_grid:
        raise ValueError(f"old grid {old_size} has {old_size[0] * old_size[1]} tokens but the embedding has {num_grid}")
    if tuple(new_size) == tuple(old_size):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_size, mode=interpolation, antialias=antialias, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(orig_dtype)
    return torch.cat([prefix, grid], dim=1)

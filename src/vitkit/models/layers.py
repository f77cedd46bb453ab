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


# On a CPU, PyTorch's bf16 flash-attention kernel is slower than two bf16 matmuls and a softmax at ViT shapes, while
# in fp32 the kernel is as fast or faster (benchmarks/attention_kernels.py, figures in
# benchmarks/results/attention_kernels.json). The explicit path holds the (B, heads, N, N) probabilities in memory,
# as training's backward does anyway. False: SDPA always.
EXPLICIT_BF16_ATTENTION_ON_CPU = True


def runs_explicit_attention(device_type: str, dtype: torch.dtype) -> bool:
    """Whether :func:`scaled_dot_product_attention` computes softmax(QK^T)V explicitly (keeping the (B, heads, N, N)
    probabilities) for tensors of this dtype on this device type, rather than calling a fused SDPA kernel."""
    return EXPLICIT_BF16_ATTENTION_ON_CPU and dtype == torch.bfloat16 and device_type == "cpu"


def attention_weights(q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) with SDPA's mask convention (bool: True attends; float: added to the logits)."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        attn = attn.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else attn + attn_mask
    return attn.softmax(dim=-1)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, except for bf16 on a CPU, where the explicit softmax(QK^T/sqrt(d))V is
    faster (see EXPLICIT_BF16_ATTENTION_ON_CPU); same function either way (tested)."""
    if not runs_explicit_attention(q.device.type, q.dtype):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    attn = attention_weights(q, k, attn_mask)
    if dropout_p > 0.0:
        attn = F.dropout(attn, dropout_p)
    return attn @ v


class PatchEmbed(nn.Module):
    """Image to patch tokens with a strided convolution.

    A Conv2d whose kernel and stride both equal the patch size is exactly a linear projection of each flattened patch
    (tests/models/test_layers.py proves it); the convolution is simply the fastest way to compute it.
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

    The default path calls ``F.scaled_dot_product_attention`` so that PyTorch picks Flash / memory-efficient kernels
    (bf16 on a CPU excepted, see ``scaled_dot_product_attention`` above).
    ``need_weights=True`` runs the explicit softmax(QK^T)V path instead and also returns the probabilities; it computes
    the same function (tested), so attention maps can be read from a model trained with the fused path.

    ``rope=True`` rotates queries and keys by their 2D patch position (RotaryEmbedding2d); ``grid`` (the patch grid's
    (h, w), patch tokens last in the sequence) must then be passed to forward. Subclasses change only how queries meet
    keys (``_attend`` / ``_weights``): WindowAttention, LinearAttention. Parameter names are the same for all.
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
        rope: bool = False,
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
        self.rope = RotaryEmbedding2d(self.head_dim) if rope else None

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        grid: tuple[int, int] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q, _need_grid(grid, "rotary position embedding")), self.rope(k, grid)
        if need_weights:
            attn = self._weights(q, k, attn_mask, grid)
            weights = attn
            x = self.attn_drop(attn) @ v
        else:
            x = self._attend(q, k, v, attn_mask, grid)
        x = x.transpose(1, 2).reshape(b, n, c)
        x = self.proj_drop(self.proj(x))
        return (x, weights) if need_weights else x

    def _dropout_p(self) -> float:
        return self.attn_drop_p if self.training else 0.0

    def _attend(self, q, k, v, attn_mask, grid) -> torch.Tensor:
        return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self._dropout_p())

    def _weights(self, q, k, attn_mask, grid) -> torch.Tensor:
        return attention_weights(q, k, attn_mask)


def _need_grid(grid: tuple[int, int] | None, what: str) -> tuple[int, int]:
    if grid is None:
        raise ValueError(f"{what} needs the patch grid: call attention(x, grid=(h, w))")
    return grid


class RotaryEmbedding2d(nn.Module):
    """Axial 2D rotary position embedding (RoPE-Axial of Heo et al. 2024, "Rotary Position Embedding for ViT").

    Half of each head's channels rotate by the patch's row, half by its column, so q.k depends on the *relative*
    offset between two patches (tested) and a model extrapolates to other grids without resampling anything.
    Prefix tokens (class, registers) are not rotated. No parameters: nothing changes in the state dict.
    """

    def __init__(self, head_dim: int, theta: float = 100.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D rotary embedding needs a head dimension divisible by 4, got {head_dim}")
        quarter = head_dim // 4
        self.register_buffer("freqs", theta ** (-torch.arange(quarter, dtype=torch.float32) / quarter), persistent=False)

    def angles(self, grid: tuple[int, int]) -> torch.Tensor:
        """(h*w, head_dim / 2) rotation angles, row-major over the grid."""
        h, w = grid
        ys, xs = torch.meshgrid(
            torch.arange(h, device=self.freqs.device, dtype=torch.float32),
            torch.arange(w, device=self.freqs.device, dtype=torch.float32),
            indexing="ij",
        )
        return torch.cat([ys.reshape(-1, 1) * self.freqs, xs.reshape(-1, 1) * self.freqs], dim=1)

    def forward(self, t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """t: (B, heads, N, head_dim) with the h*w patch tokens last."""
        num_patches = grid[0] * grid[1]
        prefix, patches = t[..., : t.shape[-2] - num_patches, :], t[..., t.shape[-2] - num_patches :, :]
        angles = self.angles(grid)
        cos, sin = angles.cos().to(t.dtype), angles.sin().to(t.dtype)
        half = t.shape[-1] // 2
        x1, x2 = patches[..., :half], patches[..., half:]
        rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
        return torch.cat([prefix, rotated], dim=-2)


class WindowAttention(Attention):
    """Local attention: a patch attends only to the patches of its own window (and to the prefix tokens).

    The windowed cost is O(N * window^2) instead of O(N^2), the high-resolution recipe of ViTDet (Li et al. 2022).
    Prefix tokens (the class token) still attend to everything, so pooling sees the whole image. Computed window by
    window; ``window_mask`` gives the same function as a mask for full attention (the test's reference).
    """

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 7, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.window_size = window_size

    def _check(self, grid) -> tuple[int, int]:
        h, w = _need_grid(grid, "window attention")
        ws = self.window_size
        if h % ws or w % ws:
            raise ValueError(f"patch grid {h}x{w} is not a multiple of window_size {ws}; pick a window that divides it")
        return h, w

    def window_mask(self, grid: tuple[int, int], num_tokens: int, device=None) -> torch.Tensor:
        """(N, N) bool, True where query i may attend key j: same window, or either token is a prefix token."""
        h, w = self._check(grid)
        prefix = num_tokens - h * w
        rows = torch.arange(h, device=device).repeat_interleave(w) // self.window_size
        cols = torch.arange(w, device=device).repeat(h) // self.window_size
        window_id = torch.cat([torch.full((prefix,), -1, device=device), rows * (w // self.window_size) + cols])
        is_prefix = window_id < 0
        return (window_id[:, None] == window_id[None, :]) | is_prefix[:, None] | is_prefix[None, :]

    def _weights(self, q, k, attn_mask, grid) -> torch.Tensor:
        mask = self.window_mask(grid, q.shape[-2], q.device)
        return super()._weights(q, k, mask if attn_mask is None else mask & attn_mask, grid)

    def _attend(self, q, k, v, attn_mask, grid) -> torch.Tensor:
        if attn_mask is not None:  # an extra mask (e.g. packing): the masked full-attention form
            mask = self.window_mask(grid, q.shape[-2], q.device) & attn_mask
            return super()._attend(q, k, v, mask, grid)
        h, w = self._check(grid)
        ws, prefix = self.window_size, q.shape[-2] - h * w
        b, heads, _, d = q.shape

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B, heads, h*w, d) -> (B, heads, nW, ws*ws, d)
            t = t.reshape(b, heads, h // ws, ws, w // ws, ws, d).permute(0, 1, 2, 4, 3, 5, 6)
            return t.reshape(b, heads, -1, ws * ws, d)

        qw, kw, vw = (windows(t[:, :, prefix:]) for t in (q, k, v))
        if prefix:
            n_win = qw.shape[2]
            kw = torch.cat([k[:, :, None, :prefix].expand(-1, -1, n_win, -1, -1), kw], dim=3)
            vw = torch.cat([v[:, :, None, :prefix].expand(-1, -1, n_win, -1, -1), vw], dim=3)
        out = scaled_dot_product_attention(qw, kw, vw, dropout_p=self._dropout_p())
        out = out.reshape(b, heads, h // ws, w // ws, ws, ws, d).permute(0, 1, 2, 4, 3, 5, 6).reshape(b, heads, h * w, d)
        if prefix:
            head = scaled_dot_product_attention(q[:, :, :prefix], k, v, dropout_p=self._dropout_p())
            out = torch.cat([head, out], dim=2)
        return out


class LinearAttention(Attention):
    """Linear attention (Katharopoulos et al. 2020): softmax(QK^T) becomes phi(Q) phi(K)^T with phi = elu + 1.

    Associativity lets phi(K)^T V (a d x d matrix per head) be formed once, so cost and memory grow as O(N d^2)
    instead of O(N^2 d): the choice for very long token sequences, at some loss of accuracy against softmax.
    """

    eps = 1e-6

    def _attend(self, q, k, v, attn_mask, grid) -> torch.Tensor:
        if attn_mask is not None:
            raise ValueError("linear attention cannot take an attention mask (it never forms the N x N matrix)")
        q, k = F.elu(q) + 1, F.elu(k) + 1
        kv = k.transpose(-2, -1) @ v  # (B, heads, d, d)
        norm = q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)  # (B, heads, N, 1)
        return self.attn_drop((q @ kv) / (norm + self.eps))

    def _weights(self, q, k, attn_mask, grid) -> torch.Tensor:
        if attn_mask is not None:
            raise ValueError("linear attention cannot take an attention mask (it never forms the N x N matrix)")
        attn = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)
        return attn / (attn.sum(dim=-1, keepdim=True) + self.eps)


ATTENTION_KINDS = {"softmax": Attention, "window": WindowAttention, "linear": LinearAttention}


def build_attention(kind: str, dim: int, num_heads: int, window_size: int = 7, **kwargs) -> Attention:
    """The attention module of a block by name: 'softmax' (full), 'window' (local windows) or 'linear'."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {tuple(ATTENTION_KINDS)}, got {kind!r}")
    if kind == "window":
        return WindowAttention(dim, num_heads, window_size, **kwargs)
    return ATTENTION_KINDS[kind](dim, num_heads, **kwargs)


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


# The MLP's activation by name. PyTorch's and timm's ViTs use the exact GELU; Google's Flax ViTs (the .npz
# checkpoints) use ``flax.linen.gelu``, whose default is the tanh approximation: a model must compute the function
# its weights were trained with, so the name is part of the model's config.
MLP_ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # name -> nn.GELU's ``approximate``


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2. ``dwconv=True`` puts a 3x3 depthwise convolution over the patch grid between fc1 and the
    GELU (SegFormer's Mix-FFN): a locality prior for tiny data or short schedules at a few percent of the MLP's
    FLOPs; prefix tokens (class, registers) skip it. The grid must then be passed to forward.
    ``act``: 'gelu' (exact) or 'gelu_tanh' (the tanh approximation of Flax's ``nn.gelu``), see MLP_ACTIVATIONS."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0, bias: bool = True,
                 dwconv: bool = False, act: str = "gelu"):
        super().__init__()
        if act not in MLP_ACTIVATIONS:
            raise ValueError(f"MLP activation must be one of {tuple(MLP_ACTIVATIONS)}, got {act!r}")
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.dwconv = (nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)
                       if dwconv else None)
        self.act = nn.GELU(approximate=MLP_ACTIVATIONS[act])
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.fc1(x)
        if self.dwconv is not None:
            x = self._local_mix(x, _need_grid(grid, "the MLP's depthwise convolution"))
        return self.drop2(self.fc2(self.drop1(self.act(x))))

    def _local_mix(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = grid
        if n < h * w:
            raise ValueError(f"the MLP's depthwise convolution needs all {h}x{w} patch tokens, got {n} tokens")
        prefix, patches = x[:, : n - h * w], x[:, n - h * w :]
        # (B, h*w, C) viewed as (B, C, h, w) in channels_last: no copy in or out
        patches = self.dwconv(patches.reshape(b, h, w, c).permute(0, 3, 1, 2))
        patches = patches.permute(0, 2, 3, 1).reshape(b, h * w, c)
        return torch.cat([prefix, patches], dim=1) if n > h * w else patches


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
        attention: str = "softmax",
        window_size: int = 7,
        rope: bool = False,
        mlp_dwconv: bool = False,
        mlp_act: str = "gelu",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = build_attention(
            attention, dim, num_heads, window_size, qkv_bias=qkv_bias, qk_norm=qk_norm, attn_drop=attn_drop,
            proj_drop=proj_drop, norm_eps=norm_eps, rope=rope,
        )
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, dwconv=mlp_dwconv, act=mlp_act)
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, grid=grid)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x), grid=grid)))
        return x

    def forward_with_attention(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, grid: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, weights = self.attn(self.norm1(x), attn_mask=attn_mask, need_weights=True, grid=grid)
        x = x + self.drop_path1(self.ls1(out))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x), grid=grid)))
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

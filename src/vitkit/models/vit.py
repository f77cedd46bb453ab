"""The plain Vision Transformer (Dosovitskiy et al. 2021), with the options later papers added.

Read top to bottom: patch embedding -> prefix tokens + position embedding -> blocks -> norm -> pooling -> head.
One class covers ViT-Ti..H, SimpleViT (sincos2d + GAP, "Better plain ViT baselines"), register tokens
(Darcet et al. 2024), LayerScale, QK-norm and token dropout, each by a constructor argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .constants import CIFAR10_MEAN, CIFAR10_STD
from .contract import VitkitModel
from .layers import Block, PatchDropout, PatchEmbed, resample_pos_embed, sincos_2d_pos_embed, to_2tuple
from .registry import register_arch, register_model

POS_EMBED_KINDS = ("learned", "sincos2d", "none")
POOLING_KINDS = ("cls", "gap")
WEIGHT_INITS = ("timm", "jax")


@register_arch
class VisionTransformer(VitkitModel):
    arch = "vit"
    embedding_params = ("patch_embed", "cls_token", "reg_token", "pos_embed")

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        class_token: bool = True,
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        pos_embed: str = "learned",
        pooling: str = "cls",
        fc_norm: bool | None = None,
        pre_norm: bool = False,
        final_norm: bool = True,
        init_values: float | None = None,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        token_keep_rate: float = 1.0,
        dynamic_img_size: bool = False,
        norm_eps: float = 1e-6,
        weight_init: str = "timm",
        zero_head: bool = False,
        attention: str = "softmax",
        window_size: int = 7,
        global_blocks: Sequence[int] = (),
        rope: bool = False,
        mlp_dwconv: bool = False,
        mlp_act: str = "gelu",
    ):
        """
        Args not obvious from their names:
            no_embed_class: prefix tokens (class, registers) get no position embedding (timm's flag of that name).
            pooling: 'cls' reads the class token, 'gap' averages the patch tokens.
            fc_norm: norm after pooling instead of before it; None = on for 'gap', as in timm.
            pre_norm: a LayerNorm after the position embedding (CLIP style).
            init_values: LayerScale init; None disables LayerScale.
            drop_rate: dropout before the head.
            token_keep_rate: fraction of patch tokens kept while training (token dropout); 1.0 = off.
            dynamic_img_size: accept any multiple of the patch size, resampling the position embedding per call.
            attention: 'softmax' (full), 'window' (each patch sees its window_size x window_size window; the blocks
                listed in global_blocks keep full attention, as in ViTDet) or 'linear' (elu+1 kernel, O(N)).
            rope: 2D rotary position embedding in every block's attention (relative positions; combine with
                pos_embed='none' for a purely relative model).
            mlp_dwconv: a 3x3 depthwise convolution over the patch grid inside every MLP (Mix-FFN, SegFormer).
            mlp_act: the MLP's GELU, 'gelu' (exact: PyTorch, timm, Hugging Face) or 'gelu_tanh' (the tanh
                approximation Flax's nn.gelu computes: Google's .npz checkpoints are imported with it).
        """
        super().__init__()
        self.config: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config["img_size"] = list(to_2tuple(img_size))
        self.config["global_blocks"] = list(global_blocks)
        if pos_embed not in POS_EMBED_KINDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}, got {pos_embed!r}")
        if pooling not in POOLING_KINDS:
            raise ValueError(f"pooling must be one of {POOLING_KINDS}, got {pooling!r}")
        if pooling == "cls" and not class_token:
            raise ValueError("pooling='cls' needs class_token=True; use pooling='gap' for a model without one")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        if (attention == "window" or rope or mlp_dwconv) and token_keep_rate < 1.0:
            raise ValueError("token dropout (token_keep_rate < 1) removes patches, so window attention, rotary "
                             "embeddings and the MLP's depthwise convolution lose their positions; use one or the other")
        bad_global = [i for i in global_blocks if not 0 <= i < depth]
        if bad_global:
            raise ValueError(f"global_blocks {bad_global} out of range for depth {depth}")

        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.pooling = pooling
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.num_reg_tokens = reg_tokens
        self.no_embed_class = no_embed_class or pos_embed == "sincos2d"
        self.pos_embed_kind = pos_embed
        self.dynamic_img_size = dynamic_img_size
        use_fc_norm = pooling == "gap" if fc_norm is None else fc_norm

        self.patch_embed = PatchEmbed(
            img_size, patch_size, in_chans, embed_dim, bias=not pre_norm, strict_img_size=not dynamic_img_size
        )
        self.patch_size = patch_size
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        embed_len = num_patches if self.no_embed_class else num_patches + self.num_prefix_tokens
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, embed_dim))
        else:
            self.pos_embed = None
            if pos_embed == "sincos2d":
                self.register_buffer(
                    "pos_embed_fixed", sincos_2d_pos_embed(self.patch_embed.grid_size, embed_dim), persistent=False
                )
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.patch_drop = (
            PatchDropout(token_keep_rate, self.num_prefix_tokens) if token_keep_rate < 1.0 else nn.Identity()
        )
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth rises with depth
        self.blocks = nn.Sequential(
            *[
                Block(
                    embed_dim, num_heads, mlp_ratio, qkv_bias, qk_norm, proj_drop_rate, attn_drop_rate,
                    init_values, dpr[i], norm_eps, "softmax" if i in global_blocks else attention, window_size, rope,
                    mlp_dwconv, mlp_act,
                )
                for i in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm and not use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm and use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(weight_init, zero_head)

    # --- initialisation ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, mode: str = "timm", zero_head: bool = False) -> None:
        """Truncated-normal init of timm ('timm') or big_vision's xavier/lecun init ('jax')."""
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if mode == "jax":
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        if "mlp" in name:
                            nn.init.normal_(module.bias, std=1e-6)
                        else:
                            nn.init.zeros_(module.bias)
                else:
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        if mode == "jax":  # lecun normal on the flattened patch projection
            w = self.patch_embed.proj.weight
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            nn.init.trunc_normal_(w, std=math.sqrt(1.0 / fan_in) / 0.87962566103423978)
            if self.patch_embed.proj.bias is not None:
                nn.init.zeros_(self.patch_embed.proj.bias)
        if (zero_head or mode == "jax") and isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    # --- the model contract (the rest is VitkitModel's defaults) -----------------------------------------------------

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "reg_token"}

    def set_input_size(self, img_size: int | Sequence[int]) -> None:
        """Change the model's native resolution in place, resampling a learned position embedding."""
        new = to_2tuple(img_size)
        old_grid = self.patch_embed.grid_size
        pe = self.patch_embed
        pe.img_size = new
        pe.grid_size = (new[0] // pe.patch_size[0], new[1] // pe.patch_size[1])
        pe.num_patches = pe.grid_size[0] * pe.grid_size[1]
        if new[0] % pe.patch_size[0] or new[1] % pe.patch_size[1]:
            raise ValueError(f"img_size {new} is not a multiple of patch_size {pe.patch_size}")
        if self.pos_embed is not None:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            with torch.no_grad():
                resampled = resample_pos_embed(self.pos_embed.data, pe.grid_size, old_grid, prefix)
            self.pos_embed = nn.Parameter(resampled, requires_grad=self.pos_embed.requires_grad)
        elif self.pos_embed_kind == "sincos2d":
            self.pos_embed_fixed = sincos_2d_pos_embed(pe.grid_size, self.embed_dim).to(self.pos_embed_fixed.device)
        self.config["img_size"] = list(new)

    # --- forward ----------------------------------------------------------------------------------------------------

    def _grid_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor | None:
        if self.pos_embed is not None:
            if grid == self.patch_embed.grid_size:
                return self.pos_embed
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            return resample_pos_embed(self.pos_embed, grid, self.patch_embed.grid_size, prefix)
        if self.pos_embed_kind == "sincos2d":
            if grid == self.patch_embed.grid_size:
                return self.pos_embed_fixed
            return sincos_2d_pos_embed(grid, self.embed_dim).to(self.pos_embed_fixed.device)
        return None

    def _prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        """The learned tokens put before the patches, in order (DeiT adds its distillation token here)."""
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(batch, -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(batch, -1, -1))
        return prefix

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        pos_embed = self._grid_pos_embed(grid)
        prefix = self._prefix_tokens(x.shape[0])
        if self.no_embed_class:
            if pos_embed is not None:
                x = x + pos_embed
            x = torch.cat(prefix + [x], dim=1) if prefix else x
        else:
            x = torch.cat(prefix + [x], dim=1) if prefix else x
            if pos_embed is not None:
                x = x + pos_embed
        x = self.patch_drop(self.pos_drop(x))
        return self.norm_pre(x), grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self._embed(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, grid=grid, use_reentrant=False)
            else:
                x = block(x, grid=grid)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return x[:, 0]
        return x[:, self.num_prefix_tokens :].mean(dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every block's attention probabilities (B, heads, N, N), via the explicit attention path."""
        x, grid = self._embed(x)
        maps = []
        for block in self.blocks:
            x, attn = block.forward_with_attention(x, grid=grid)
            maps.append(attn)
        return self.forward_head(self.norm(x)), maps

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ):
        """Outputs of chosen blocks, for dense heads and feature probing.

        indices: an int n takes the last n blocks, a sequence takes those block indices (negative allowed),
        None takes all. output_fmt 'NCHW' reshapes patch tokens to (B, D, H', W'); 'NLC' keeps (B, N, D).
        Returns the list of intermediates, or (final features, intermediates) unless intermediates_only.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        depth = len(self.blocks)
        if indices is None:
            take = list(range(depth))
        elif isinstance(indices, int):
            if not 0 < indices <= depth:
                raise ValueError(f"asked for the last {indices} blocks of a model with {depth}")
            take = list(range(depth - indices, depth))
        else:
            take = [i + depth if i < 0 else i for i in indices]
            bad = [i for i in take if not 0 <= i < depth]
            if bad:
                raise ValueError(f"block indices {bad} out of range for depth {depth}")
        if output_fmt == "NCHW" and isinstance(self.patch_drop, PatchDropout) and self.training:
            raise ValueError("output_fmt='NCHW' is impossible while token dropout removes tokens; use 'NLC' or eval()")

        b = x.shape[0]
        x, grid = self._embed(x)
        outputs = []
        last = max(take)
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, grid=grid, use_reentrant=False)
            else:
                x = block(x, grid=grid)
            if i in take:
                outputs.append(self.norm(x) if norm else x)
            if intermediates_only and i == last:
                break
        results = []
        for out in outputs:
            prefix, patches = out[:, : self.num_prefix_tokens], out[:, self.num_prefix_tokens :]
            if output_fmt == "NCHW":
                patches = patches.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()
            results.append((patches, prefix) if return_prefix_tokens else patches)
        if intermediates_only:
            return results
        return self.norm(x), results


def flatten_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C) in (row, col, channel) order, i.e. what the ViT paper's linear projection eats."""
    b, c, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def conv_weight_as_linear(weight: torch.Tensor) -> torch.Tensor:
    """Patch-embedding conv weight (D, C, p, p) as the equivalent linear weight (D, p*p*C) for flatten_patches."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


# --- the ViT family ------------------------------------------------------------------------------------------------

VIT_SIZES = {  # (embed_dim, depth, num_heads): the ViT paper's and DeiT's sizes
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


def vit_kwargs(size: str, patch: int, **extra: Any) -> dict[str, Any]:
    """Constructor arguments of a ViT size ('tiny' .. 'huge') and patch, plus ``extra``."""
    dim, depth, heads = VIT_SIZES[size]
    return dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, **extra)


def _register_vits() -> None:
    """The plain-ViT entries of the registry (every DeiT name, plain or distilled, is in deit.py)."""
    timm_names = [
        ("tiny", 16, 224), ("tiny", 16, 384),
        ("small", 16, 224), ("small", 16, 384), ("small", 32, 224), ("small", 32, 384),
        ("base", 16, 224), ("base", 16, 384), ("base", 32, 224), ("base", 32, 384), ("base", 8, 224),
        ("large", 16, 224), ("large", 16, 384), ("large", 32, 224), ("large", 32, 384),
        ("huge", 14, 224),
    ]
    features_only = {("huge", 14, 224), ("large", 32, 224)}  # timm ships these as in21k backbones, no head
    for size, patch, res in timm_names:
        extra = {"num_classes": 0} if (size, patch, res) in features_only else {}
        register_model(
            f"vit_{size}_patch{patch}_{res}",
            kwargs=vit_kwargs(size, patch, img_size=res, **extra),
            crop_pct=1.0 if res == 384 else 0.9,
            tags=("timm",),
        )
    # Register tokens (Darcet et al. 2024), with timm's names and layout (GAP, no class token).
    for size in ("small", "base"):
        register_model(
            f"vit_{size}_patch16_reg4_gap_256",
            kwargs=vit_kwargs(size, 16, img_size=256, class_token=False, no_embed_class=True, pooling="gap", reg_tokens=4),
            crop_pct=0.95,
            tags=("timm",) if size == "base" else (),
        )
    # SimpleViT: "Better plain ViT baselines for ImageNet-1k" (Beyer et al. 2022): sincos2d, GAP, zero head.
    for size, patch in (("tiny", 16), ("small", 16), ("small", 32), ("base", 16), ("base", 32), ("large", 16)):
        register_model(
            f"simplevit_{size}_patch{patch}_224",
            kwargs=vit_kwargs(
                size, patch, img_size=224, class_token=False, pos_embed="sincos2d", pooling="gap", fc_norm=False,
                weight_init="jax",
            ),
            notes="big_vision plain ViT baseline",
        )
    # Small images (CIFAR, 32x32): patch 4 gives an 8x8 grid, patch 2 a 16x16 grid.
    for size, patch in (("tiny", 4), ("small", 4), ("tiny", 2)):
        register_model(
            f"vit_{size}_patch{patch}_32",
            kwargs=vit_kwargs(size, patch, img_size=32, num_classes=10),
            mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
        )
        register_model(
            f"simplevit_{size}_patch{patch}_32",
            kwargs=vit_kwargs(
                size, patch, img_size=32, num_classes=10, class_token=False, pos_embed="sincos2d", pooling="gap",
                fc_norm=False, weight_init="jax",
            ),
            mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
        )
    # The embedded default: a very small ViT for 8x8 digits (scikit-learn), trains in about a minute on a CPU.
    register_model(
        "vit_digits_patch2_8",
        kwargs=dict(
            img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
        ),
        mean=(0.5,), std=(0.5,), crop_pct=1.0,
        notes="embedded default for `vitkit train` on scikit-learn digits",
    )
    # Plain-ViT attention options on CIFAR-sized inputs (8x8 grid): local 4x4 windows, linear attention, 2D RoPE.
    register_model("vit_tiny_window4_patch4_32", kwargs=vit_kwargs("tiny", 4, img_size=32, num_classes=10,
                   attention="window", window_size=4, global_blocks=(5, 11)), mean=CIFAR10_MEAN, std=CIFAR10_STD,
                   crop_pct=1.0)
    register_model("vit_tiny_linear_patch4_32", kwargs=vit_kwargs("tiny", 4, img_size=32, num_classes=10,
                   attention="linear"), mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0)
    register_model("vit_tiny_rope_patch4_32", kwargs=vit_kwargs("tiny", 4, img_size=32, num_classes=10, rope=True),
                   mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0)


_register_vits()


__all__ = ["VisionTransformer", "VIT_SIZES", "vit_kwargs", "flatten_patches", "conv_weight_as_linear"]

"""LeViT (Graham et al. 2021, "LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference").

A ViT built for speed at inference, read top to bottom:
- a convolutional stem (3x3 stride-2 convolutions with BatchNorm and Hardswish) turns the image into a 14x14 grid
  of tokens at 224 px (stride 16) instead of cutting patches;
- stages of attention blocks at decreasing resolution. Every linear layer is followed by BatchNorm instead of being
  preceded by LayerNorm, so at inference each Linear + BN pair folds into one Linear (``fuse_batchnorm``). Attention
  has no position embedding: a learned bias per head and per relative offset (|dy|, |dx|) is added to the attention
  logits, passed to ``scaled_dot_product_attention`` as its float ``attn_mask``. Values are wider than keys
  (``attn_ratio``) and a Hardswish precedes the output projection;
- between stages an attention block whose queries come from every second token of every second row (a 2x
  subsampled grid) halves the resolution and widens the channels ("shrink attention");
- average pooling and two BN + Linear heads (class and distillation), averaged at inference, as in DeiT.

Module and parameter names are timm's ``levit.py`` (``levit_*`` names: the BatchNorm1d / Linear layout), so a timm
state dict loads without renaming and the registered names have timm's parameter counts (tested).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .constants import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from .contract import VitkitModel
from .layers import DropPath, scaled_dot_product_attention, to_2tuple
from .registry import register_arch, register_model

STEM_STRIDES = (4, 8, 16)


# --- Linear / conv layers followed by BatchNorm, and their folding -------------------------------------------------


class ConvNorm(nn.Module):
    """Conv2d (no bias) + BatchNorm2d; the stem's layer. ``linear`` is timm's name for the convolution."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.linear = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        scale, shift = _bn_affine(self.bn)
        conv = self.linear
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          device=conv.weight.device)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(shift)
        return fused


class LinearNorm(nn.Module):
    """Linear (no bias) + BatchNorm1d over the channels of every token: LeViT's replacement for LayerNorm + Linear."""

    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)  # statistics over all tokens of the batch

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        scale, shift = _bn_affine(self.bn)
        fused = nn.Linear(self.linear.in_features, self.linear.out_features, device=self.linear.weight.device)
        fused.weight.copy_(self.linear.weight * scale[:, None])
        fused.bias.copy_(shift)
        return fused


class NormLinear(nn.Module):
    """BatchNorm1d + dropout + Linear: the classifier heads."""

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.bn(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        scale, shift = _bn_affine(self.bn)
        fused = nn.Linear(self.linear.in_features, self.linear.out_features, device=self.linear.weight.device)
        fused.weight.copy_(self.linear.weight * scale[None, :])
        fused.bias.copy_(self.linear.weight @ shift + self.linear.bias)
        return fused


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


# --- stem -------------------------------------------------------------------------------------------------------------


class ConvStem(nn.Sequential):
    """log2(stride) 3x3 stride-2 ConvNorm layers with Hardswish between them, channels doubling up to ``out_chs``.

    Stride 16 is the paper's stem (timm ``Stem16``), 8 timm's ``Stem8``; stride 4 keeps an 8x8 grid for 32 px images.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 16, act_layer: type[nn.Module] = nn.Hardswish):
        super().__init__()
        if stride not in STEM_STRIDES:
            raise ValueError(f"stem_stride must be one of {STEM_STRIDES}, got {stride}")
        self.stride = stride
        n = stride.bit_length() - 1
        chs = [in_chs] + [out_chs // 2 ** (n - 1 - i) for i in range(n)]
        for i in range(n):
            self.add_module(f"conv{i + 1}", ConvNorm(chs[i], chs[i + 1], 3, stride=2, padding=1))
            if i < n - 1:
                self.add_module(f"act{i + 1}", act_layer())


# --- attention with a learned relative-position bias ---------------------------------------------------------------


def attention_bias_index(resolution: tuple[int, int], stride: int = 1) -> torch.Tensor:
    """(Nq, Nk) index into a per-head table of N_k biases: query i and key j share a bias when |dy|, |dx| match.

    Queries sit on every ``stride``-th row and column of the key grid (stride 2: the shrink attention).
    """
    h, w = resolution
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    qy, qx = torch.meshgrid(torch.arange(0, h, stride), torch.arange(0, w, stride), indexing="ij")
    dy = (qy.reshape(-1, 1) - ys.reshape(1, -1)).abs()
    dx = (qx.reshape(-1, 1) - xs.reshape(1, -1)).abs()
    return dy * w + dx


class BiasedAttentionBase(nn.Module):
    """What attention and shrink attention share: the bias table, the fused attention call, the output projection."""

    def __init__(self, num_heads: int, key_dim: int, val_dim: int, out_dim: int, resolution: tuple[int, int],
                 stride: int, act_layer: type[nn.Module], proj_bn_init: float):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = num_heads, key_dim, val_dim
        self.scale = key_dim**-0.5
        self.resolution = resolution
        self.proj = nn.Sequential(OrderedDict([
            ("act", act_layer()), ("ln", LinearNorm(val_dim * num_heads, out_dim, bn_weight_init=proj_bn_init)),
        ]))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        self.register_buffer("attention_bias_idxs", attention_bias_index(resolution, stride), persistent=False)

    def attention_bias(self) -> torch.Tensor:
        """(heads, Nq, Nk) additive bias of the attention logits."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, need_weights: bool):
        """q, k: (B, heads, N, key_dim), v: (B, heads, Nk, val_dim) -> (B, Nq, heads * val_dim) projected."""
        bias = self.attention_bias().to(q.dtype)
        weights = None
        if need_weights:
            weights = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
            out = weights @ v
        else:  # default scale is key_dim ** -0.5, LeViT's; values may be wider than keys
            out = scaled_dot_product_attention(q, k, v, attn_mask=bias)
        b, _, n, _ = out.shape
        out = self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.val_dim))
        return (out, weights) if need_weights else out

    def _check_tokens(self, x: torch.Tensor) -> None:
        n = self.resolution[0] * self.resolution[1]
        if x.shape[1] != n:
            raise ValueError(f"expected {n} tokens ({self.resolution[0]}x{self.resolution[1]} grid), got "
                             f"{x.shape[1]}; LeViT's attention biases fix the input size: build it with that img_size")


class LevitAttention(BiasedAttentionBase):
    """Self-attention over the token grid, with the bias table and a Hardswish before the projection."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: tuple[int, int],
                 act_layer: type[nn.Module] = nn.Hardswish):
        val_dim = int(attn_ratio * key_dim)
        super().__init__(num_heads, key_dim, val_dim, dim, resolution, 1, act_layer, proj_bn_init=0.0)  # residual
        self.qkv = LinearNorm(dim, num_heads * (2 * key_dim + val_dim))

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        self._check_tokens(x)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        return self._attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), need_weights)


class Subsample(nn.Module):
    """Every ``stride``-th token of every ``stride``-th row of a (B, H*W, C) token grid."""

    def __init__(self, stride: int, resolution: tuple[int, int]):
        super().__init__()
        self.stride, self.resolution = stride, resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution[0], self.resolution[1], c)[:, :: self.stride, :: self.stride]
        return x.reshape(b, -1, c)


class AttentionDownsample(BiasedAttentionBase):
    """Shrink attention: queries from the 2x subsampled grid, keys and values from the full grid, wider output."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 resolution: tuple[int, int], stride: int = 2, act_layer: type[nn.Module] = nn.Hardswish):
        val_dim = int(attn_ratio * key_dim)
        super().__init__(num_heads, key_dim, val_dim, out_dim, resolution, stride, act_layer, proj_bn_init=1.0)
        self.stride = stride
        self.kv = LinearNorm(in_dim, num_heads * (key_dim + val_dim))
        self.q = nn.Sequential(OrderedDict([
            ("down", Subsample(stride, resolution)), ("ln", LinearNorm(in_dim, num_heads * key_dim)),
        ]))

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        self._check_tokens(x)
        b, n, _ = x.shape
        k, v = self.kv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.val_dim], dim=3)
        q = self.q(x).view(b, -1, self.num_heads, self.key_dim)
        return self._attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), need_weights)


class LevitMlp(nn.Module):
    """LinearNorm -> Hardswish -> LinearNorm (the second BN starts at zero: each residual branch starts as identity)."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.Hardswish, drop: float = 0.0):
        super().__init__()
        self.ln1 = LinearNorm(dim, hidden)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.ln2 = LinearNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.drop(self.act(self.ln1(x))))


class LevitBlock(nn.Module):
    """x + attn(x), then x + mlp(x): no LayerNorm, the BatchNorms inside each layer do the normalising."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, mlp_ratio: float,
                 resolution: tuple[int, int], act_layer: type[nn.Module] = nn.Hardswish, drop_path: float = 0.0):
        super().__init__()
        self.attn = LevitAttention(dim, key_dim, num_heads, attn_ratio, resolution, act_layer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = LevitMlp(dim, int(dim * mlp_ratio), act_layer)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(x))
        return x + self.drop_path2(self.mlp(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, weights = self.attn(x, need_weights=True)
        x = x + self.drop_path1(out)
        return x + self.drop_path2(self.mlp(x)), weights


class LevitDownsample(nn.Module):
    """Shrink attention (no residual: the shape changes) followed by a residual MLP."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, resolution: tuple[int, int],
                 act_layer: type[nn.Module] = nn.Hardswish, drop_path: float = 0.0):
        super().__init__()
        self.attn_downsample = AttentionDownsample(in_dim, out_dim, key_dim, in_dim // key_dim, 4.0, resolution,
                                                   act_layer=act_layer)
        self.mlp = LevitMlp(out_dim, out_dim * 2, act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_downsample(x)
        return x + self.drop_path(self.mlp(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, weights = self.attn_downsample(x, need_weights=True)
        return x + self.drop_path(self.mlp(x)), weights


class LevitStage(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, key_dim: int, depth: int, num_heads: int, attn_ratio: float,
                 mlp_ratio: float, resolution: tuple[int, int], downsample: bool,
                 act_layer: type[nn.Module] = nn.Hardswish, drop_path: float = 0.0):
        super().__init__()
        if downsample:
            self.downsample = LevitDownsample(in_dim, out_dim, key_dim, resolution, act_layer, drop_path)
            resolution = downsampled(resolution)
        else:
            if in_dim != out_dim:
                raise ValueError(f"a stage without downsampling keeps its width: {in_dim} != {out_dim}")
            self.downsample = nn.Identity()
        self.resolution = resolution
        self.blocks = nn.Sequential(*[
            LevitBlock(out_dim, key_dim, num_heads, attn_ratio, mlp_ratio, resolution, act_layer, drop_path)
            for _ in range(depth)
        ])

    def layers(self) -> list[nn.Module]:
        """The downsampling block (if any) and the attention blocks, in order: the units of checkpointing."""
        return ([] if isinstance(self.downsample, nn.Identity) else [self.downsample]) + list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def downsampled(resolution: tuple[int, int], stride: int = 2) -> tuple[int, int]:
    return ((resolution[0] - 1) // stride + 1, (resolution[1] - 1) // stride + 1)


ACTIVATIONS = {"hardswish": nn.Hardswish, "silu": nn.SiLU, "gelu": nn.GELU}


@register_arch
class LeViT(VitkitModel):
    arch = "levit"

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (128, 256, 384),
        key_dim: int = 16,
        depth: Sequence[int] = (2, 3, 4),
        num_heads: Sequence[int] = (4, 6, 8),
        attn_ratio: float | Sequence[float] = 2.0,
        mlp_ratio: float | Sequence[float] = 2.0,
        stem_stride: int = 16,
        act_layer: str = "hardswish",
        distilled: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        """
        Args not obvious from their names:
            embed_dim, depth, num_heads: one entry per stage; stages after the first start with a shrink attention.
            key_dim: width of each head's queries and keys; values are attn_ratio times wider.
            stem_stride: 16 (the paper), 8 or 4 (small images): the convolutional stem's total stride.
            distilled: a second (distillation) head as in timm's LevitDistilled and the published weights; the two
                heads' logits are averaged except in distillation training (set_distilled_training).
            drop_path_rate: stochastic depth, the same rate for every residual branch (as in LeViT).
        """
        super().__init__()
        self.config: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config.update(img_size=list(to_2tuple(img_size)), embed_dim=list(embed_dim), depth=list(depth),
                           num_heads=list(num_heads))
        for key in ("attn_ratio", "mlp_ratio"):
            if not isinstance(self.config[key], (int, float)):
                self.config[key] = list(self.config[key])
        stages = len(embed_dim)
        if not (len(depth) == len(num_heads) == stages):
            raise ValueError(f"embed_dim, depth and num_heads need one entry per stage, got {len(embed_dim)}, "
                             f"{len(depth)}, {len(num_heads)}")
        attn_ratio = _per_stage(attn_ratio, stages, "attn_ratio")
        mlp_ratio = _per_stage(mlp_ratio, stages, "mlp_ratio")
        if act_layer not in ACTIVATIONS:
            raise ValueError(f"act_layer must be one of {tuple(ACTIVATIONS)}, got {act_layer!r}")
        act = ACTIVATIONS[act_layer]
        self.img_size = to_2tuple(img_size)
        if self.img_size[0] % stem_stride or self.img_size[1] % stem_stride:
            raise ValueError(f"img_size {self.img_size} is not a multiple of the stem stride {stem_stride}")
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim[-1]
        self.drop_rate = drop_rate
        self.distilled = distilled
        self.distilled_training = False

        self.stem = ConvStem(in_chans, embed_dim[0], stem_stride, act)
        resolution = (self.img_size[0] // stem_stride, self.img_size[1] // stem_stride)
        self.grid_size = resolution
        stage_list = []
        in_dim = embed_dim[0]
        for i in range(stages):
            stage = LevitStage(in_dim, embed_dim[i], key_dim, depth[i], num_heads[i], attn_ratio[i], mlp_ratio[i],
                               resolution, downsample=i > 0, act_layer=act, drop_path=drop_path_rate)
            stage_list.append(stage)
            resolution, in_dim = stage.resolution, embed_dim[i]
        self.stages = nn.Sequential(*stage_list)
        self.head = self._new_head(num_classes)
        self.head_dist = self._new_head(num_classes) if distilled else None

    def _new_head(self, num_classes: int, device=None) -> nn.Module:
        head = NormLinear(self.num_features, num_classes, self.drop_rate) if num_classes > 0 else nn.Identity()
        return head.to(device) if device is not None else head

    # --- the model contract (the rest is VitkitModel's defaults) -----------------------------------------------------

    def layers(self) -> list[nn.Module]:
        """Every block (shrink attentions included) in order of depth."""
        return [layer for stage in self.stages for layer in stage.layers()]

    def no_weight_decay(self) -> set[str]:
        """The attention bias tables are position parameters, like a ViT's position embedding."""
        return {name for name, _ in self.named_parameters() if name.endswith("attention_biases")}

    def layer_id(self, param_name: str) -> int:
        """Stem 0, the blocks 1..L in order of depth (shrink attentions count as blocks), heads L + 1."""
        if param_name.startswith("stem."):
            return 0
        if param_name.startswith("stages."):
            parts = param_name.split(".")
            stage = int(parts[1])
            before = sum(len(s.layers()) for s in self.stages[:stage])
            has_down = not isinstance(self.stages[stage].downsample, nn.Identity)
            within = 0 if parts[2] == "downsample" else int(parts[3]) + int(has_down)
            return before + within + 1
        return len(self.layers()) + 1

    @property
    def num_layers(self) -> int:
        return len(self.layers()) + 2

    def set_distilled_training(self, enable: bool = True) -> None:
        """Training forward returns (class-head logits, distillation-head logits) instead of their mean."""
        if enable and not self.distilled:
            raise ValueError("this LeViT has no distillation head (distilled=False)")
        self.distilled_training = enable

    def reset_classifier(self, num_classes: int) -> None:
        device = self.stem.conv1.linear.weight.device
        self.num_classes = num_classes
        self.config["num_classes"] = num_classes
        self.head = self._new_head(num_classes, device)
        if self.distilled:
            self.head_dist = self._new_head(num_classes, device)

    @torch.no_grad()
    def fuse_batchnorm(self) -> LeViT:
        """Fold every BatchNorm into the Linear / conv next to it, in place, for inference and export.

        The fused model computes the same eval-mode function (tested) with fewer ops. It cannot be trained or saved
        as a vitkit checkpoint any more (its layers no longer match the config); fuse a copy for deployment.
        """
        if self.training:
            raise RuntimeError("fuse_batchnorm folds the BatchNorms' running statistics: call model.eval() first")
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, (ConvNorm, LinearNorm, NormLinear)):
                    setattr(module, name, child.fuse())
        self.fused = True
        return self

    # --- forward ----------------------------------------------------------------------------------------------------

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected an image batch (B, C, {self.img_size[0]}, {self.img_size[1]}), got shape "
                             f"{tuple(x.shape)}; LeViT's attention biases fix the input size")
        return self.stem(x).flatten(2).transpose(1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) tokens of the last stage."""
        x = self._tokens(x)
        for layer in self.layers():
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = x.mean(dim=1)
        if pre_logits:
            return x
        if self.head_dist is None:
            return self.head(x)
        logits, logits_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every block's attention probabilities (B, heads, Nq, Nk), via the explicit path."""
        x = self._tokens(x)
        maps = []
        for layer in self.layers():
            x, weights = layer.forward_with_attention(x)
            maps.append(weights)
        return self.forward_head(x), maps


def _per_stage(value: float | Sequence[float], stages: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * stages
    value = [float(v) for v in value]
    if len(value) != stages:
        raise ValueError(f"{name} needs one entry per stage ({stages}), got {value}")
    return value


# --- registry ------------------------------------------------------------------------------------------------------

LEVIT_CONFIGS = {  # timm's model_cfgs: (embed_dim, key_dim, num_heads, depth)
    "levit_128s": ((128, 256, 384), 16, (4, 6, 8), (2, 3, 4)),
    "levit_128": ((128, 256, 384), 16, (4, 8, 12), (4, 4, 4)),
    "levit_192": ((192, 288, 384), 32, (3, 5, 6), (4, 4, 4)),
    "levit_256": ((256, 384, 512), 32, (4, 6, 8), (4, 4, 4)),
    "levit_384": ((384, 512, 768), 32, (6, 9, 12), (4, 4, 4)),
}


def levit_kwargs(name: str, **extra: Any) -> dict[str, Any]:
    embed_dim, key_dim, num_heads, depth = LEVIT_CONFIGS[name]
    return dict(embed_dim=embed_dim, key_dim=key_dim, num_heads=num_heads, depth=depth, **extra)


def _register_levits() -> None:
    """Registry entries: timm's names, and a stride-4 stem model for 32 px images."""
    for name in LEVIT_CONFIGS:
        register_model(name, arch="levit", kwargs=levit_kwargs(name, img_size=224), mean=IMAGENET_MEAN,
                       std=IMAGENET_STD, crop_pct=0.9, tags=("timm",))
    register_model("levit_128s_stem4_32", arch="levit",
                   kwargs=levit_kwargs("levit_128s", img_size=32, num_classes=10, stem_stride=4),
                   mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
                   notes="LeViT-128S with a stride-4 stem for CIFAR: 8x8, 4x4, 2x2 token grids")


_register_levits()


__all__ = ["LeViT", "LEVIT_CONFIGS", "attention_bias_index", "levit_kwargs"]

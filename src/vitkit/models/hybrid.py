"""Hybrid CNN + ViT: a convolutional stem makes the token grid, a plain ViT does the rest.

Two stems:
- ``backbone='resnet'``: a ResNet (torchvision's Bottleneck blocks with GroupNorm, which does not depend on the
  batch, as in BiT) cut after a few stages, as in the ViT paper's R50+ViT-B/16 (stages (3, 4, 9), stride 16) and
  AugReg's R26+S/32 (stages (2, 2, 2, 2), stride 32) and R+Ti/16 (root only, stride 4, patch 4).
- ``backbone='conv'``: a light stack of 3x3 stride-2 convolutions ("Early convolutions help transformers see
  better", Xiao et al. 2021), the option for small images where a 7x7 root and max-pool would discard too much.
``patch_size`` is the patch on the stem's feature map (1 = every feature pixel is a token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from .constants import CIFAR10_MEAN, CIFAR10_STD
from .layers import to_2tuple
from .registry import register_arch, register_model
from .vit import VisionTransformer, vit_kwargs

BACKBONES = ("resnet", "conv")


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels, eps=1e-5)


def resnet_stem(in_chans: int, layers: Sequence[int], width: int = 64) -> tuple[nn.Sequential, int, int]:
    """Root (7x7/2 conv + 3x3/2 max-pool) and bottleneck stages; returns (module, stride, out channels)."""
    modules: list[nn.Module] = [
        nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False), _group_norm(width), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    stride, channels = 4, width
    for i, blocks in enumerate(layers):
        planes = width * 2**i
        block_stride = 1 if i == 0 else 2
        stage = []
        for j in range(blocks):
            s = block_stride if j == 0 else 1
            down = None
            if j == 0 and (s != 1 or channels != planes * Bottleneck.expansion):
                down = nn.Sequential(nn.Conv2d(channels, planes * Bottleneck.expansion, 1, stride=s, bias=False),
                                     _group_norm(planes * Bottleneck.expansion))
            stage.append(Bottleneck(channels, planes, s, down, norm_layer=_group_norm))
            channels = planes * Bottleneck.expansion
        modules.append(nn.Sequential(*stage))
        stride *= block_stride
    return nn.Sequential(*modules), stride, channels


def conv_stem(in_chans: int, channels: Sequence[int], strides: Sequence[int] | None = None
              ) -> tuple[nn.Sequential, int, int]:
    """3x3 conv + BatchNorm + ReLU per entry of ``channels`` (stride 2 each unless ``strides`` says otherwise: a
    stride-1 layer adds depth at a resolution without shrinking the grid); returns (module, stride, out channels)."""
    strides = [2] * len(channels) if strides is None else list(strides)
    if len(strides) != len(channels) or any(s not in (1, 2) for s in strides):
        raise ValueError(f"conv_strides must hold 1 or 2 for each of the {len(channels)} conv_channels, got {strides}")
    modules: list[nn.Module] = []
    prev, total = in_chans, 1
    for ch, stride in zip(channels, strides):
        modules += [nn.Conv2d(prev, ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(ch),
                    nn.ReLU(inplace=True)]
        prev, total = ch, total * stride
    return nn.Sequential(*modules), total, prev


class HybridEmbed(nn.Module):
    """CNN stem, then a patch_size x patch_size projection of its feature map: the token grid (B, D, H', W').

    Exposes PatchEmbed's attributes (img_size, patch_size = total stride, grid_size ...) so the ViT around it
    handles position embeddings and resolution changes exactly as for plain patches.
    """

    def __init__(self, backbone: nn.Module, stride: int, channels: int, patch_size: int, img_size, in_chans: int,
                 embed_dim: int, strict_img_size: bool = True):
        super().__init__()
        self.backbone = backbone
        self.in_chans = in_chans
        self.img_size = to_2tuple(img_size)
        self.patch_size = (stride * patch_size,) * 2
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected an image batch (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.strict_img_size and (h, w) != self.img_size:
            raise ValueError(f"expected input size {self.img_size[0]}x{self.img_size[1]}, got {h}x{w}")
        if h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"input size {h}x{w} is not a multiple of the total stride {self.patch_size}")
        return self.proj(self.backbone(x))


@register_arch
class HybridVisionTransformer(VisionTransformer):
    arch = "hybrid"

    def __init__(
        self,
        backbone: str = "resnet",
        layers: Sequence[int] = (3, 4, 9),
        stem_width: int = 64,
        conv_channels: Sequence[int] = (64, 128),
        conv_strides: Sequence[int] | None = None,
        patch_size: int = 1,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        **kwargs: Any,
    ):
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if backbone == "resnet":
            stem, stride, channels = resnet_stem(in_chans, layers, stem_width)
        else:
            stem, stride, channels = conv_stem(in_chans, conv_channels, conv_strides)
        super().__init__(img_size=img_size, patch_size=stride * patch_size, in_chans=in_chans, **kwargs)
        self.config.update(backbone=backbone, layers=list(layers), stem_width=stem_width,
                           conv_channels=list(conv_channels), patch_size=patch_size,
                           conv_strides=list(conv_strides) if conv_strides is not None else None)
        self.patch_embed = HybridEmbed(stem, stride, channels, patch_size, img_size, in_chans, self.embed_dim,
                                       strict_img_size=not self.dynamic_img_size)
        self.patch_size = stride * patch_size
        # the stem lives under patch_embed, so layer_id puts it in layer 0, like a patch projection


def _register_hybrids() -> None:
    """Registry entries. Sizes follow the ViT paper and AugReg."""
    register_model("vit_hybrid_r50_base_224", arch="hybrid",
                   kwargs=vit_kwargs("base", 1, img_size=224, backbone="resnet", layers=(3, 4, 9)),
                   notes="R50+ViT-B/16 of the ViT paper (ResNet-50 stages 1-3, stage 3 extended to 9 blocks)")
    register_model("vit_hybrid_r26_small_224", arch="hybrid",
                   kwargs=vit_kwargs("small", 1, img_size=224, backbone="resnet", layers=(2, 2, 2, 2)),
                   notes="R26+S/32 of AugReg")
    register_model("vit_hybrid_rti_tiny_224", arch="hybrid",
                   kwargs=vit_kwargs("tiny", 4, img_size=224, backbone="resnet", layers=()),
                   notes="R+Ti/16 of AugReg: ResNet root only (stride 4), 4x4 patches of its features")
    register_model("vit_hybrid_conv_tiny_32", arch="hybrid",
                   kwargs=vit_kwargs("tiny", 1, img_size=32, num_classes=10, backbone="conv", conv_channels=(48, 96)),
                   mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
                   notes="light conv stem (two 3x3/2 convs) for CIFAR: an 8x8 token grid")
    register_model("vit_hybrid_conv_small_224", arch="hybrid",
                   kwargs=vit_kwargs("small", 1, img_size=224, backbone="conv",
                                     conv_channels=(48, 96, 192, 384)) | {"depth": 11},
                   notes="ViT-S with the convolutional stem of Xiao et al. 2021 (four 3x3/2 convs, one block fewer)")


_register_hybrids()


__all__ = ["HybridVisionTransformer", "HybridEmbed", "resnet_stem", "conv_stem"]

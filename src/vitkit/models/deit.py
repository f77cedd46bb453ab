"""DeiT with a distillation token (Touvron et al. 2021, "Training data-efficient image transformers").

A plain ViT plus one learned token: the class token learns from the labels, the distillation token from a teacher,
each through its own head. At inference the two heads' logits are averaged. In training with
``distilled_training=True`` (set by the engine when ``train.distill`` is on) forward returns both, so the loss can
send the labels to one head and the teacher to the other. Parameter names are timm's ``VisionTransformerDistilled``.
"""

from __future__ import annotations

import torch
from torch import nn

from .constants import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from .layers import PatchDropout
from .registry import register_arch, register_model
from .vit import VisionTransformer, vit_kwargs


@register_arch
class DistilledVisionTransformer(VisionTransformer):
    arch = "deit"
    embedding_params = (*VisionTransformer.embedding_params, "dist_token")

    def __init__(self, **kwargs):
        if not kwargs.get("class_token", True) or kwargs.get("pooling", "cls") != "cls":
            raise ValueError("DeiT reads its class and distillation tokens: it needs class_token=True, pooling='cls'")
        if kwargs.get("reg_tokens", 0) or kwargs.get("no_embed_class", False):
            raise ValueError("DeiT with register tokens or no_embed_class is not a published layout; use the plain ViT")
        super().__init__(**kwargs)
        self.distilled_training = False
        self.num_prefix_tokens = 2
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        if self.pos_embed is not None:  # one more prefix position for the distillation token
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 2, self.embed_dim))
        if isinstance(self.patch_drop, PatchDropout):
            self.patch_drop.num_prefix_tokens = 2
        self.head_dist = nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self._init_distillation()

    @torch.no_grad()
    def _init_distillation(self) -> None:
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        if isinstance(self.head_dist, nn.Linear):
            nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
            nn.init.zeros_(self.head_dist.bias)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"dist_token"}

    def set_distilled_training(self, enable: bool = True) -> None:
        """Training forward returns (class-head logits, distillation-head logits) instead of their mean."""
        self.distilled_training = enable

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        self.head_dist = nn.Linear(self.embed_dim, num_classes, device=self.dist_token.device) \
            if num_classes > 0 else nn.Identity()

    def _prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        return [self.cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1)]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x_cls, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
        if pre_logits:
            return (x_cls + x_dist) / 2
        x_cls, x_dist = self.head(x_cls), self.head_dist(x_dist)
        if self.distilled_training and self.training:
            return x_cls, x_dist
        return (x_cls + x_dist) / 2


def _register_deits() -> None:
    """timm's DeiT names. The plain ones are ViTs trained with the DeiT recipe (ImageNet normalisation); the
    distilled ones add the distillation token and head."""
    for size, res in (("tiny", 224), ("small", 224), ("base", 224), ("base", 384)):
        crop = 1.0 if res == 384 else 0.875
        register_model(f"deit_{size}_patch16_{res}", kwargs=vit_kwargs(size, 16, img_size=res), mean=IMAGENET_MEAN,
                       std=IMAGENET_STD, crop_pct=crop, tags=("timm",))
        register_model(f"deit_{size}_distilled_patch16_{res}", arch="deit", kwargs=vit_kwargs(size, 16, img_size=res),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=crop, tags=("timm",))
    register_model("deit_tiny_distilled_patch4_32", arch="deit",
                   kwargs=vit_kwargs("tiny", 4, img_size=32, num_classes=10), mean=CIFAR10_MEAN, std=CIFAR10_STD,
                   crop_pct=1.0, notes="DeiT-Ti with distillation token for CIFAR")


_register_deits()


__all__ = ["DistilledVisionTransformer"]

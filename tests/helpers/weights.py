"""A tiny plain ViT that the weight-file tests save, load and convert."""

import torch

from vitkit.models import VisionTransformer

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)


def tiny(**kw):
    torch.manual_seed(0)
    return VisionTransformer(**{**TINY, **kw}).eval()

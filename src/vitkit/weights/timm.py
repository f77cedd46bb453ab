"""timm state dicts -> vitkit: ``VisionTransformer`` (and DeiT), ``Levit`` and ``CrossVit``.

vitkit uses timm's parameter names, so the table is short: it mostly lists which keys exist, so that anything else
(a MAP head, a layout vitkit does not build) is reported instead of silently dropped.
"""

from __future__ import annotations

import torch

from .convert import Rule, apply_rules

TIMM_RULES = [
    Rule(r"(cls_token|reg_token|pos_embed)", r"\1"),
    Rule(r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    Rule(r"norm_pre\.(weight|bias)", r"norm_pre.\1"),
    Rule(r"blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"blocks.\1.\2.\3"),
    Rule(r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    Rule(r"blocks\.(\d+)\.attn\.(q_norm|k_norm)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    Rule(r"blocks\.(\d+)\.(ls1|ls2)\.gamma", r"blocks.\1.\2.gamma"),
    Rule(r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    Rule(r"(norm|fc_norm)\.(weight|bias)", r"\1.\2"),
    Rule(r"head\.(weight|bias)", r"head.\1"),
    # DeiT (timm VisionTransformerDistilled): the distillation token and its head
    Rule(r"dist_token", r"dist_token"),
    Rule(r"head_dist\.(weight|bias)", r"head_dist.\1"),
    # LeViT (timm Levit / LevitDistilled): same names. The levit_conv_* weights (the same network written with 1x1
    # convolutions) load as the levit_* linear layout by dropping the 1x1 kernel dims. Old checkpoints saved the
    # bias index tables, which vitkit (like timm today) recomputes.
    Rule(r"(stem|stages)\.(.+)\.attention_bias_idxs", None),
    Rule(r"stem\.(conv\d)\.(linear|bn)\.(.+)", r"stem.\1.\2.\3"),
    Rule(r"stages\.(\d+)\.(.+)\.linear\.weight", r"stages.\1.\2.linear.weight", lambda t: t.flatten(1)),
    Rule(r"stages\.(\d+)\.(.+)\.(linear|bn)\.(.+)", r"stages.\1.\2.\3.\4"),
    Rule(r"stages\.(\d+)\.(.+)\.attention_biases", r"stages.\1.\2.attention_biases"),
    Rule(r"(head|head_dist)\.(bn|linear)\.(.+)", r"\1.\2.\3"),
    # CrossViT (timm CrossVit); the original IBM checkpoints name the branch tokens pos_embed.0 / cls_token.0
    Rule(r"(pos_embed|cls_token)[._](\d)", r"\1_\2"),
    Rule(r"patch_embed\.(\d)\.proj\.(\d\.)?(weight|bias)", r"patch_embed.\1.proj.\2\3"),
    Rule(r"blocks\.(\d+)\.(blocks|projs|fusion|revert_projs)\.(.+)", r"blocks.\1.\2.\3"),
    Rule(r"(norm|head)\.(\d)\.(weight|bias)", r"\1.\2.\3"),
]


def convert_timm(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Returns (vitkit state dict, timm keys with no vitkit counterpart, e.g. a MAP head)."""
    return apply_rules(state, TIMM_RULES)

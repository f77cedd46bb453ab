"""Hugging Face ``ViTModel`` / ``ViTForImageClassification`` folders -> vitkit (mapping table + config.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .convert import Rule, apply_rules

_P = r"(?:vit\.)?"  # ViTForImageClassification prefixes the backbone with "vit."; ViTModel does not
_L = _P + r"encoder\.layer\.(\d+)\."

HF_RULES = [
    Rule(_P + r"embeddings\.cls_token", "cls_token"),
    Rule(_P + r"embeddings\.position_embeddings", "pos_embed"),
    Rule(_P + r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    Rule(_P + r"embeddings\.mask_token", None),  # only used for masked-image-modeling pretraining
    Rule(_L + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    Rule(_L + r"attention\.attention\.query\.(weight|bias)", r"blocks.\1.attn.qkv.\2#q"),
    Rule(_L + r"attention\.attention\.key\.(weight|bias)", r"blocks.\1.attn.qkv.\2#k"),
    Rule(_L + r"attention\.attention\.value\.(weight|bias)", r"blocks.\1.attn.qkv.\2#v"),
    Rule(_L + r"attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    Rule(_L + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    Rule(_L + r"intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    Rule(_L + r"output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    Rule(_P + r"layernorm\.(weight|bias)", r"norm.\1"),
    Rule(r"classifier\.(weight|bias)", r"head.\1"),
]


def convert_hf(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    return apply_rules(state, HF_RULES)


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: {path} is missing")
    return json.loads(path.read_text())


def vit_kwargs_from_hf_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Translate a transformers ``ViTConfig`` into VisionTransformer arguments; refuse what vitkit cannot mirror."""
    model_type = cfg.get("model_type", "vit")
    if model_type != "vit":
        raise ValueError(f"config.json has model_type={model_type!r}; only 'vit' folders can be imported")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"config.json has hidden_act={act!r}; vitkit's ViT uses exact GELU ('gelu') only")
    hidden = cfg.get("hidden_size", 768)
    labels = cfg.get("id2label") or {}
    if cfg.get("encoder_stride") not in (None, cfg.get("patch_size", 16)):
        pass  # only used by the masked-image-modeling decoder, irrelevant for classification
    return dict(
        img_size=cfg.get("image_size", 224),
        patch_size=cfg.get("patch_size", 16),
        in_chans=cfg.get("num_channels", 3),
        num_classes=len(labels) if labels else 0,
        embed_dim=hidden,
        depth=cfg.get("num_hidden_layers", 12),
        num_heads=cfg.get("num_attention_heads", 12),
        mlp_ratio=cfg.get("intermediate_size", 4 * hidden) / hidden,
        qkv_bias=cfg.get("qkv_bias", True),
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        proj_drop_rate=cfg.get("hidden_dropout_prob", 0.0),
        attn_drop_rate=cfg.get("attention_probs_dropout_prob", 0.0),
    )


def class_names_from_hf_config(cfg: dict[str, Any]) -> list[str] | None:
    labels = cfg.get("id2label")
    if not labels:
        return None
    return [labels[str(i)] if str(i) in labels else labels[i] for i in range(len(labels))]

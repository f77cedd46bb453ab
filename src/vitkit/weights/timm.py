"""timm state dicts -> vitkit: ``VisionTransformer`` (and DeiT), ``Levit`` and ``CrossVit``; timm's hub config.json.

vitkit uses timm's parameter names, so the table is short: it mostly lists which keys exist, so that anything else
(a MAP head, a layout vitkit does not build) is reported instead of silently dropped. The config.json of a timm hub
repo tells the architecture, its preprocessing, labels and license.
"""

from __future__ import annotations

from typing import Any

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


# --- timm's Hugging Face Hub repositories --------------------------------------------------------------------------
# timm publishes each set of weights as its own repo, ``timm/<architecture>.<tag>``, whose config.json (written by
# timm's ``save_for_hf``) names the architecture, the constructor arguments that differ from the registered ones
# (``model_args``) and the preprocessing, labels and license of the weights (``pretrained_cfg``).

TIMM_HUB_ORG = "timm"

# timm's own defaults (timm.data.constants and resolve_data_config) for fields a pretrained_cfg leaves out
TIMM_DEFAULT_CROP_PCT = 0.875
TIMM_DEFAULT_INTERPOLATION = "bicubic"
TIMM_DEFAULT_CROP_MODE = "center"
TIMM_DEFAULT_MEAN = (0.485, 0.456, 0.406)
TIMM_DEFAULT_STD = (0.229, 0.224, 0.225)

_POOLING = {"token": "cls", "avg": "gap"}  # timm's global_pool -> vitkit's pooling


def is_timm_hub_config(cfg: dict[str, Any]) -> bool:
    """A config.json written by timm (it names an ``architecture``); transformers' name a ``model_type``."""
    return "architecture" in cfg or "pretrained_cfg" in cfg


def split_model_tag(name: str) -> tuple[str, str]:
    """``'vit_base_patch16_224.augreg_in21k'`` -> ``('vit_base_patch16_224', 'augreg_in21k')``; no tag: ``''``."""
    arch, _, tag = name.partition(".")
    return arch, tag


def timm_pretrained_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``pretrained_cfg`` of a timm config.json (older exports keep its fields at the top level)."""
    return dict(cfg.get("pretrained_cfg") or {k: v for k, v in cfg.items() if k not in ("architecture", "model_args")})


def timm_architecture(cfg: dict[str, Any]) -> str:
    arch = cfg.get("architecture") or timm_pretrained_cfg(cfg).get("architecture")
    if not arch:
        raise ValueError("the timm config.json names no 'architecture'")
    return str(arch)


def vit_kwargs_from_timm_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """timm's ``model_args`` (constructor arguments beyond the registered ones) in vitkit's names.

    vitkit's ViT takes timm's argument names; only ``global_pool`` is spelled ``pooling`` here.
    """
    kwargs = dict(cfg.get("model_args") or {})
    if "global_pool" in kwargs:
        pool = kwargs.pop("global_pool")
        if pool not in _POOLING:
            raise ValueError(f"the timm config.json has global_pool={pool!r}; vitkit pools 'token' or 'avg' only")
        kwargs["pooling"] = _POOLING[pool]
    if "img_size" in kwargs and isinstance(kwargs["img_size"], list):
        kwargs["img_size"] = tuple(kwargs["img_size"])
    return kwargs


def data_config_from_timm_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing timm applies to these weights, in timm's own field names and with timm's defaults."""
    pc = timm_pretrained_cfg(cfg)
    return {
        "input_size": [int(v) for v in pc.get("input_size", (3, 224, 224))],
        "interpolation": str(pc.get("interpolation") or TIMM_DEFAULT_INTERPOLATION),
        "crop_pct": float(pc.get("crop_pct") or TIMM_DEFAULT_CROP_PCT),
        "crop_mode": str(pc.get("crop_mode") or TIMM_DEFAULT_CROP_MODE),
        "mean": [float(v) for v in pc.get("mean", TIMM_DEFAULT_MEAN)],
        "std": [float(v) for v in pc.get("std", TIMM_DEFAULT_STD)],
    }


def class_names_from_timm_config(cfg: dict[str, Any]) -> list[str] | None:
    """``label_names`` (a list, or a dict from class index to name) at the top level or in pretrained_cfg."""
    labels = cfg.get("label_names") or timm_pretrained_cfg(cfg).get("label_names")
    if not labels:
        return None
    if isinstance(labels, dict):
        return [str(labels.get(str(i), labels.get(i, f"class_{i}"))) for i in range(len(labels))]
    return [str(v) for v in labels]


def license_from_timm_config(cfg: dict[str, Any]) -> str | None:
    value = timm_pretrained_cfg(cfg).get("license") or cfg.get("license")
    return str(value) if value else None


def timm_default_repo(arch: str) -> str | None:
    """The hub repo timm's own ``pretrained=True`` picks for an untagged name (the first tag with weights in timm's
    source); None when timm is not installed or knows no weights for it. Only used to word an error."""
    try:
        import timm.models
    except ImportError:
        return None
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except RuntimeError:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub_id or None

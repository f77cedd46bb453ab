"""Hugging Face ``ViTModel`` / ``ViTForImageClassification`` <-> vitkit: one name table, read both ways, and the
config.json / preprocessor_config.json that describe the model and its preprocessing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .convert import Rule, apply_rules

# vitkit name <-> Hugging Face name, both directions from this one table; "{i}" is the block index. HF names are
# ViTForImageClassification's: it prefixes the backbone with "vit.", ViTModel does not (the import accepts both).
# "#q"/"#k"/"#v" marks the third of vitkit's fused qkv projection that HF keeps as a separate query/key/value.
HF_PREFIX = "vit."
HF_NAMES: tuple[tuple[str, str], ...] = (
    ("cls_token", "vit.embeddings.cls_token"),
    ("pos_embed", "vit.embeddings.position_embeddings"),
    ("patch_embed.proj.weight", "vit.embeddings.patch_embeddings.projection.weight"),
    ("patch_embed.proj.bias", "vit.embeddings.patch_embeddings.projection.bias"),
    ("blocks.{i}.norm1.weight", "vit.encoder.layer.{i}.layernorm_before.weight"),
    ("blocks.{i}.norm1.bias", "vit.encoder.layer.{i}.layernorm_before.bias"),
    ("blocks.{i}.attn.qkv.weight#q", "vit.encoder.layer.{i}.attention.attention.query.weight"),
    ("blocks.{i}.attn.qkv.bias#q", "vit.encoder.layer.{i}.attention.attention.query.bias"),
    ("blocks.{i}.attn.qkv.weight#k", "vit.encoder.layer.{i}.attention.attention.key.weight"),
    ("blocks.{i}.attn.qkv.bias#k", "vit.encoder.layer.{i}.attention.attention.key.bias"),
    ("blocks.{i}.attn.qkv.weight#v", "vit.encoder.layer.{i}.attention.attention.value.weight"),
    ("blocks.{i}.attn.qkv.bias#v", "vit.encoder.layer.{i}.attention.attention.value.bias"),
    ("blocks.{i}.attn.proj.weight", "vit.encoder.layer.{i}.attention.output.dense.weight"),
    ("blocks.{i}.attn.proj.bias", "vit.encoder.layer.{i}.attention.output.dense.bias"),
    ("blocks.{i}.norm2.weight", "vit.encoder.layer.{i}.layernorm_after.weight"),
    ("blocks.{i}.norm2.bias", "vit.encoder.layer.{i}.layernorm_after.bias"),
    ("blocks.{i}.mlp.fc1.weight", "vit.encoder.layer.{i}.intermediate.dense.weight"),
    ("blocks.{i}.mlp.fc1.bias", "vit.encoder.layer.{i}.intermediate.dense.bias"),
    ("blocks.{i}.mlp.fc2.weight", "vit.encoder.layer.{i}.output.dense.weight"),
    ("blocks.{i}.mlp.fc2.bias", "vit.encoder.layer.{i}.output.dense.bias"),
    ("norm.weight", "vit.layernorm.weight"),
    ("norm.bias", "vit.layernorm.bias"),
    ("head.weight", "classifier.weight"),
    ("head.bias", "classifier.bias"),
)
# The mask token is only used in masked-image-modeling pretraining. The pooler (dense + tanh) is ViTModel's
# ``pooler_output``; ViTForImageClassification has none and classifies the normalised class token, as vitkit does,
# so a ViTModel backbone (google/vit-base-patch16-224-in21k) loads as transformers fine-tunes it.
HF_IGNORED = ("vit.embeddings.mask_token", "vit.pooler.dense.weight", "vit.pooler.dense.bias")

_QKV_PARTS = "qkv"


def _hf_pattern(hf_name: str) -> str:
    """An HF name template as a regex: the block index captured, the ``vit.`` prefix optional (ViTModel)."""
    pattern = re.escape(hf_name).replace(re.escape("{i}"), r"(\d+)")
    prefix = re.escape(HF_PREFIX)
    return f"(?:{prefix})?" + pattern[len(prefix):] if pattern.startswith(prefix) else pattern


HF_RULES = [Rule(_hf_pattern(hf), vitkit.replace("{i}", r"\1")) for vitkit, hf in HF_NAMES] + [
    Rule(_hf_pattern(hf), None) for hf in HF_IGNORED
]


def convert_hf(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hugging Face (ViTForImageClassification or ViTModel) keys -> vitkit keys; returns (state, unmatched keys)."""
    return apply_rules(state, HF_RULES)


def _vitkit_pattern(vitkit_name: str) -> re.Pattern:
    return re.compile(re.escape(vitkit_name).replace(re.escape("{i}"), r"(?P<i>\d+)"))


def vitkit_to_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vitkit keys -> ViTForImageClassification keys, by :data:`HF_NAMES` read the other way.

    The fused ``qkv`` projection is split back into query/key/value along the output dimension.
    """
    inverse = []
    for vitkit, hf in HF_NAMES:
        base, _, part = vitkit.partition("#")
        inverse.append((_vitkit_pattern(base), part, hf))
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state.items():
        hits = [(m, part, hf) for pattern, part, hf in inverse if (m := pattern.fullmatch(key))]
        if not hits:
            unmapped.append(key)
        for m, part, hf in hits:
            tensor = value.chunk(3, dim=0)[_QKV_PARTS.index(part)] if part else value
            out[hf.format(i=m.groupdict().get("i"))] = tensor.contiguous()
    if unmapped:
        raise ValueError(f"no Hugging Face name for vitkit weights: {', '.join(unmapped)}")
    return out


# transformers' hidden_act -> vitkit's mlp_act: "gelu" is the exact GELU; "gelu_pytorch_tanh" and "gelu_new" both
# compute the tanh approximation (the latter written out by hand)
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
MLP_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}

# PIL's resampling codes, as image processors store them in preprocessor_config.json
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
HF_DEFAULT_DATA_CONFIG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 1.0}  # ViTImageProcessor's


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
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"config.json has hidden_act={act!r}; vitkit's ViT computes {', '.join(HF_ACTIVATIONS)}")
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
        mlp_act=HF_ACTIVATIONS[act],
    )


def class_names_from_hf_config(cfg: dict[str, Any]) -> list[str] | None:
    labels = cfg.get("id2label")
    if not labels:
        return None
    return [labels[str(i)] if str(i) in labels else labels[i] for i in range(len(labels))]


def read_hf_preprocessor_config(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / "preprocessor_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _hw(size: Any, default: int) -> tuple[str, tuple[int, int]]:
    """An image processor's ``size`` / ``crop_size``: ('exact', (h, w)) or ('shortest_edge', (s, s))."""
    if size is None:
        return "exact", (default, default)
    if isinstance(size, int):
        return "exact", (size, size)
    if "height" in size and "width" in size:
        return "exact", (int(size["height"]), int(size["width"]))
    if "shortest_edge" in size:
        return "shortest_edge", (int(size["shortest_edge"]),) * 2
    raise ValueError(f"preprocessor_config.json has a size vitkit cannot read: {size!r}")


def data_config_from_hf_preprocessor(pp: dict[str, Any] | None, image_size: int = 224,
                                     in_chans: int = 3) -> dict[str, Any]:
    """The preprocessing an image processor config describes, in the model data_config's (timm's) field names.

    ViTImageProcessor resizes to exactly (height, width), no crop: crop_mode 'squash', crop_pct 1. A processor that
    resizes to (h, w) and then center-crops (DeiTImageProcessor) is 'squash' with crop_pct = crop / resize; one that
    resizes the shortest edge and then center-crops (BitImageProcessor) is 'center' with crop_pct = crop / edge.
    """
    if pp is None:
        return {**HF_DEFAULT_DATA_CONFIG, "input_size": [in_chans, image_size, image_size], "crop_mode": "squash",
                "interpolation": "bilinear"}
    mode, (h, w) = _hw(pp.get("size"), image_size) if pp.get("do_resize", True) else ("exact", (image_size,) * 2)
    crop_h, crop_w = h, w
    if pp.get("do_center_crop"):
        _, (crop_h, crop_w) = _hw(pp.get("crop_size"), image_size)
    if mode == "shortest_edge" and not pp.get("do_center_crop"):
        raise ValueError("preprocessor_config.json resizes the shortest edge without a crop: the input size varies "
                         "with the image, which vitkit's fixed-size preprocessing cannot reproduce")
    if pp.get("do_rescale", True) and abs(float(pp.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ValueError(f"preprocessor_config.json rescales by {pp['rescale_factor']}, vitkit by 1/255 only")
    normalize = pp.get("do_normalize", True)
    resample = pp.get("resample", 2)
    return {
        "input_size": [in_chans, crop_h, crop_w],
        "interpolation": PIL_RESAMPLE.get(resample, str(resample)) if isinstance(resample, int) else str(resample),
        "crop_pct": round(crop_h / h, 6),
        "crop_mode": "center" if mode == "shortest_edge" else "squash",
        "mean": [float(v) for v in pp.get("image_mean", HF_DEFAULT_DATA_CONFIG["mean"])] if normalize else [0.0] * in_chans,
        "std": [float(v) for v in pp.get("image_std", HF_DEFAULT_DATA_CONFIG["std"])] if normalize else [1.0] * in_chans,
    }

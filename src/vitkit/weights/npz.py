"""Google ``vision_transformer`` / ``big_vision`` ``.npz`` checkpoints <-> vitkit.

Both layouts are read: the original (``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``,
``Transformer/posembed_input/pos_embedding``) and big_vision's (``..._0``, ``LayerNorm_1``, ``MlpBlock_0``,
``pos_embedding`` at the root, optionally with all blocks stacked under ``Transformer/encoderblock``).
``save_npz`` writes the original layout, which Google's code and timm's ``_load_weights`` read.
Google's ViTs are Flax models whose MLP calls ``flax.linen.gelu``, the tanh approximation of GELU, so an imported
.npz model is built with ``mlp_act='gelu_tanh'`` (stored in its config: it survives save, load and export).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .convert import Rule, apply_rules


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.t().contiguous()


def _qkv_kernel(x: torch.Tensor) -> torch.Tensor:  # (D, heads, head_dim) -> (heads*head_dim, D)
    return x.reshape(x.shape[0], -1).t().contiguous()


def _out_kernel(x: torch.Tensor) -> torch.Tensor:  # (heads, head_dim, D) -> (D, heads*head_dim)
    return x.reshape(-1, x.shape[-1]).t().contiguous()


def _conv_kernel(x: torch.Tensor) -> torch.Tensor:  # HWIO -> OIHW
    return x.permute(3, 2, 0, 1).contiguous()


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1)


_B = r"Transformer/encoderblock_(\d+)/"
_MHA = _B + r"MultiHeadDotProductAttention_[01]/"
_MLP = _B + r"MlpBlock_[03]/"
NPZ_RULES = [
    Rule(r"embedding/kernel", "patch_embed.proj.weight", _conv_kernel),
    Rule(r"embedding/bias", "patch_embed.proj.bias"),
    Rule(r"cls", "cls_token"),
    Rule(r"(?:Transformer/posembed_input/)?pos_embedding", "pos_embed"),
    Rule(_B + r"LayerNorm_0/scale", r"blocks.\1.norm1.weight"),
    Rule(_B + r"LayerNorm_0/bias", r"blocks.\1.norm1.bias"),
    Rule(_MHA + r"query/kernel", r"blocks.\1.attn.qkv.weight#q", _qkv_kernel),
    Rule(_MHA + r"key/kernel", r"blocks.\1.attn.qkv.weight#k", _qkv_kernel),
    Rule(_MHA + r"value/kernel", r"blocks.\1.attn.qkv.weight#v", _qkv_kernel),
    Rule(_MHA + r"query/bias", r"blocks.\1.attn.qkv.bias#q", _flat),
    Rule(_MHA + r"key/bias", r"blocks.\1.attn.qkv.bias#k", _flat),
    Rule(_MHA + r"value/bias", r"blocks.\1.attn.qkv.bias#v", _flat),
    Rule(_MHA + r"out/kernel", r"blocks.\1.attn.proj.weight", _out_kernel),
    Rule(_MHA + r"out/bias", r"blocks.\1.attn.proj.bias"),
    Rule(_B + r"LayerNorm_[12]/scale", r"blocks.\1.norm2.weight"),
    Rule(_B + r"LayerNorm_[12]/bias", r"blocks.\1.norm2.bias"),
    Rule(_MLP + r"Dense_0/kernel", r"blocks.\1.mlp.fc1.weight", _t),
    Rule(_MLP + r"Dense_0/bias", r"blocks.\1.mlp.fc1.bias"),
    Rule(_MLP + r"Dense_1/kernel", r"blocks.\1.mlp.fc2.weight", _t),
    Rule(_MLP + r"Dense_1/bias", r"blocks.\1.mlp.fc2.bias"),
    Rule(r"Transformer/encoder_norm/scale", "norm.weight"),
    Rule(r"Transformer/encoder_norm/bias", "norm.bias"),
    Rule(r"head/kernel", "head.weight", _t),
    Rule(r"head/bias", "head.bias"),
]


def read_npz(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an .npz as float32 tensors, unstacking big_vision's scanned ``Transformer/encoderblock/...`` arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # truncated, foreign or pickled content
        raise ValueError(f"{path} is not a readable .npz checkpoint ({type(err).__name__}: {err})") from None
    for prefix in ("opt/target/", "params/img/", "params/"):  # Flax training states and big_vision multi-tower files
        if f"{prefix}embedding/kernel" in arrays:
            arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            break
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        if key.startswith("Transformer/encoderblock/"):
            rest = key[len("Transformer/encoderblock/"):]
            for i in range(value.shape[0]):
                out[f"Transformer/encoderblock_{i}/{rest}"] = torch.from_numpy(np.asarray(value[i], dtype=np.float32))
        else:
            out[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return out


def convert_npz(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    return apply_rules(state, NPZ_RULES)


def vit_kwargs_from_npz(state: dict[str, torch.Tensor], img_size: int | None = None) -> dict[str, Any]:
    """Infer VisionTransformer arguments from an .npz's array names and shapes (heads come from query/kernel)."""
    if "embedding/kernel" not in state:
        raise ValueError("not a ViT .npz checkpoint: the array 'embedding/kernel' is missing")
    p, _, in_chans, dim = state["embedding/kernel"].shape
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))}
    q = next(v for k, v in state.items() if k.startswith("Transformer/encoderblock_0/") and k.endswith("query/kernel"))
    fc1 = next(v for k, v in state.items() if k.startswith("Transformer/encoderblock_0/") and k.endswith("Dense_0/kernel"))
    class_token = "cls" in state
    pos_key = next((k for k in ("Transformer/posembed_input/pos_embedding", "pos_embedding") if k in state), None)
    if img_size is None:
        if pos_key is None:
            raise ValueError("this .npz has no position embedding (sincos2d); pass img_size explicitly")
        n = state[pos_key].shape[1] - int(class_token)
        img_size = int(round(n**0.5)) * p
    unsupported = [k for k in state if k.startswith(("pre_logits", "MAPHead"))]
    if unsupported:
        raise ValueError(f"this .npz uses parts vitkit's ViT does not have: {', '.join(sorted(unsupported)[:4])}")
    return dict(
        img_size=img_size,
        patch_size=p,
        in_chans=in_chans,
        num_classes=state["head/kernel"].shape[1] if "head/kernel" in state else 0,
        embed_dim=dim,
        depth=len(blocks),
        num_heads=q.shape[1],
        mlp_ratio=fc1.shape[1] / dim,
        class_token=class_token,
        pooling="cls" if class_token else "gap",
        fc_norm=False,
        pos_embed="learned" if pos_key else "sincos2d",
        norm_eps=1e-6,
        mlp_act="gelu_tanh",  # flax.linen.gelu, which Google's MlpBlock calls, is the tanh approximation by default
    )


def save_npz(model: nn.Module, path: str | Path) -> None:
    """Write a vitkit ViT in the original vision_transformer .npz layout (kernels in Flax's (in, out) order).

    Google's code runs the file with Flax's tanh-approximate GELU; a model built with ``mlp_act='gelu_tanh'`` (as
    imported .npz files are) computes the same function, an exact-GELU model a slightly different one.
    """
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if "fc_norm.weight" in sd:
        raise ValueError("the .npz layout has its final norm before pooling; this model normalises after (fc_norm)")
    if "blocks.0.attn.qkv.bias" not in sd or "blocks.0.attn.q_norm.weight" in sd or "blocks.0.ls1.gamma" in sd:
        raise ValueError("the .npz layout needs qkv biases and has no qk_norm or LayerScale")
    heads = model.blocks[0].attn.num_heads
    dim = model.embed_dim
    hd = dim // heads
    out: dict[str, np.ndarray] = {}
    out["embedding/kernel"] = sd["patch_embed.proj.weight"].permute(2, 3, 1, 0).numpy()
    out["embedding/bias"] = sd["patch_embed.proj.bias"].numpy()
    if "cls_token" in sd:
        out["cls"] = sd["cls_token"].numpy()
    if "pos_embed" in sd:
        out["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"].numpy()
    for i in range(len(model.blocks)):
        b, pre = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        out[pre + "LayerNorm_0/scale"] = sd[b + "norm1.weight"].numpy()
        out[pre + "LayerNorm_0/bias"] = sd[b + "norm1.bias"].numpy()
        qw, kw, vw = sd[b + "attn.qkv.weight"].chunk(3, dim=0)
        qb, kb, vb = sd[b + "attn.qkv.bias"].chunk(3, dim=0)
        for name, w, bias in (("query", qw, qb), ("key", kw, kb), ("value", vw, vb)):
            out[pre + f"MultiHeadDotProductAttention_1/{name}/kernel"] = w.t().reshape(dim, heads, hd).numpy()
            out[pre + f"MultiHeadDotProductAttention_1/{name}/bias"] = bias.reshape(heads, hd).numpy()
        out[pre + "MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attn.proj.weight"].t().reshape(heads, hd, dim).numpy()
        out[pre + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"].numpy()
        out[pre + "LayerNorm_2/scale"] = sd[b + "norm2.weight"].numpy()
        out[pre + "LayerNorm_2/bias"] = sd[b + "norm2.bias"].numpy()
        out[pre + "MlpBlock_3/Dense_0/kernel"] = sd[b + "mlp.fc1.weight"].t().numpy()
        out[pre + "MlpBlock_3/Dense_0/bias"] = sd[b + "mlp.fc1.bias"].numpy()
        out[pre + "MlpBlock_3/Dense_1/kernel"] = sd[b + "mlp.fc2.weight"].t().numpy()
        out[pre + "MlpBlock_3/Dense_1/bias"] = sd[b + "mlp.fc2.bias"].numpy()
    out["Transformer/encoder_norm/scale"] = sd["norm.weight"].numpy()
    out["Transformer/encoder_norm/bias"] = sd["norm.bias"].numpy()
    if "head.weight" in sd:
        out["head/kernel"] = sd["head.weight"].t().numpy()
        out["head/bias"] = sd["head.bias"].numpy()
    np.savez(path, **out)

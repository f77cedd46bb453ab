"""FLOPs two ways: a closed form from the ViT's structure, and PyTorch's own counter on a real (or meta) run.

FLOPs are 2 x multiply-adds of matmuls, convolutions and attention, the convention of
``torch.utils.flop_counter`` (norms, GELU and softmax are not counted, by either side).

PyTorch's counter has no formula for the CPU flash-attention kernel (``_scaled_dot_product_flash_attention_for_cpu``
and its backward), so on a CPU it silently drops all attention FLOPs; and its convolution backward formula ignores
``groups``, so a depthwise convolution's backward is counted as if it were dense (256x too much for a 256-channel
one). ``register_flop_formulas`` adds the first and corrects the second (each gradient of a convolution costs what its
forward does, groups included), so CPU and CUDA counts agree and grouped convolutions are counted right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

_aten = torch.ops.aten
_REGISTERED = False


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Grad of the input and grad of the weight each cost one forward convolution (whose count, from the weight's
    (C_out, C_in / groups, k, k) shape, is right for any groups); equal to torch's formula when groups == 1."""
    forward = flop_counter.conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def register_flop_formulas() -> None:
    """Fix ``torch.utils.flop_counter`` for every counter built after this call, in this process (module doc)."""
    global _REGISTERED
    if _REGISTERED:
        return
    registry = getattr(flop_counter, "flop_registry", {})
    registry[_aten.convolution_backward] = flop_counter.shape_wrapper(_conv_backward_flop)
    fwd_op = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd_op = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd_op is not None and fwd_op.default not in registry and fwd_op not in registry:

        @flop_counter.register_flop_formula(fwd_op)
        def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    if bwd_op is not None and bwd_op.default not in registry and bwd_op not in registry:

        @flop_counter.register_flop_formula(bwd_op)
        def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    _REGISTERED = True


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --- closed form -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViTShape:
    """The numbers that decide a plain ViT's cost, read off a model's config."""

    img_size: tuple[int, int]
    patch_size: int
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    num_prefix_tokens: int
    num_classes: int
    pooling: str
    qk_norm: bool
    layer_scale: bool
    drop_path: bool
    qkv_bias: bool
    token_keep_rate: float = 1.0
    classifier_heads: int = 1  # DeiT's distillation head is a second one

    @classmethod
    def from_config(cls, config: dict[str, Any], img_size: int | Sequence[int] | None = None,
                    token_keep_rate: float | None = None) -> ViTShape:
        size = config["img_size"] if img_size is None else img_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            img_size=(int(size[0]), int(size[1])),
            patch_size=int(config["patch_size"]),
            in_chans=int(config.get("in_chans", 3)),
            embed_dim=int(config["embed_dim"]),
            depth=int(config["depth"]),
            num_heads=int(config["num_heads"]),
            mlp_hidden=int(config["embed_dim"] * config.get("mlp_ratio", 4.0)),
            num_prefix_tokens=int(config.get("class_token", True)) + int(config.get("reg_tokens", 0)),
            num_classes=int(config.get("num_classes", 1000)),
            pooling=config.get("pooling", "cls"),
            qk_norm=bool(config.get("qk_norm", False)),
            layer_scale=config.get("init_values") is not None,
            drop_path=float(config.get("drop_path_rate", 0.0)) > 0,
            qkv_bias=bool(config.get("qkv_bias", True)),
            token_keep_rate=float(config.get("token_keep_rate", 1.0) if token_keep_rate is None else token_keep_rate),
        )

    @property
    def grid_tokens(self) -> int:
        return (self.img_size[0] // self.patch_size) * (self.img_size[1] // self.patch_size)

    def block_tokens(self, training: bool) -> int:
        """Tokens each block sees; token dropout shrinks it while training only."""
        kept = self.grid_tokens
        if training and self.token_keep_rate < 1.0:
            kept = max(1, int(round(self.grid_tokens * self.token_keep_rate)))
        return kept + self.num_prefix_tokens


# Architectures with the plain ViT's config keys, and their prefix tokens beyond class + registers (DeiT: the
# distillation token, read by a head of its own).
PLANNABLE_EXTRA_TOKENS = {"vit": 0, "deit": 1}
# ViT options outside the closed form (window / linear attention, rotary embeddings, the MLP's depthwise conv)
CLOSED_FORM_DEFAULTS = {"attention": "softmax", "rope": False, "mlp_dwconv": False}


def closed_form_problem(model: nn.Module) -> str | None:
    """Why the closed forms do not describe ``model`` (a vitkit model), or None when they do."""
    arch = getattr(model, "arch", None)
    if arch not in PLANNABLE_EXTRA_TOKENS:
        return f"it is a {type(model).__name__} (arch {arch!r}); the closed form covers the plain ViT and DeiT"
    unmodelled = {k: model.config[k] for k, plain in CLOSED_FORM_DEFAULTS.items() if model.config.get(k, plain) != plain}
    if unmodelled:
        return f"it sets {unmodelled}; the closed form covers full softmax attention and the plain MLP"
    return None


def closed_form_shape_of(model: nn.Module, token_keep_rate: float | None = None) -> ViTShape:
    """The :class:`ViTShape` of a plain ViT or DeiT (its distillation token and head counted); ValueError otherwise."""
    problem = closed_form_problem(model)
    if problem is not None:
        raise ValueError(f"no closed form for this model: {problem}")
    shape = ViTShape.from_config(model.config, token_keep_rate=token_keep_rate)
    extra = PLANNABLE_EXTRA_TOKENS[model.arch]
    return replace(shape, num_prefix_tokens=shape.num_prefix_tokens + extra, classifier_heads=1 + extra)


def vit_flops(shape: ViTShape, mode: str = "infer", grad_checkpointing: bool = False,
              fused_attention: bool = True) -> dict[str, int]:
    """FLOPs per image by component. mode='train' is forward + backward (+ the recomputed forward if checkpointing).

    Backward costs twice the forward for matmuls (grads for input and weight), once for the patch embedding (its
    input needs no grad), and 2.5x for fused attention (five matmuls against the forward's two, as torch counts it;
    explicit attention's backward is four plain matmuls: 2x).
    """
    training = mode == "train"
    n, d, m = shape.block_tokens(training), shape.embed_dim, shape.mlp_hidden
    patch = 2 * shape.grid_tokens * shape.in_chans * shape.patch_size**2 * d
    linear = 2 * n * (3 * d * d + d * d + 2 * d * m)  # qkv, proj, fc1, fc2
    attn = 4 * n * n * d  # QK^T and PV
    head = 2 * d * shape.num_classes * shape.classifier_heads
    per_block_fwd = linear + attn
    out = {"patch_embed": patch, "blocks": shape.depth * per_block_fwd, "head": head}
    if training:
        attn_bwd = (_sdpa_backward_ratio() if fused_attention else 2) * attn
        out["patch_embed"] += patch  # weight grad only
        out["blocks"] += shape.depth * (2 * linear + attn_bwd)
        out["head"] += 2 * head
        if grad_checkpointing:  # non-reentrant checkpointing stops early: a block's last op (fc2) is never rerun
            out["recompute"] = shape.depth * (per_block_fwd - 2 * n * d * m)
    out["total"] = sum(out.values())
    return out


def _sdpa_backward_ratio() -> float:
    """Backward/forward FLOP ratio of fused attention as torch's counter defines it (2.5: five matmuls vs two)."""
    q = (1, 1, 64, 32)
    return flop_counter.sdpa_backward_flop_count(q, q, q, q) / flop_counter.sdpa_flop_count(q, q, q)


# --- counted -------------------------------------------------------------------------------------------------------


def counted_flops(
    model: nn.Module, input_size: Sequence[int], batch: int = 1, mode: str = "infer",
    autocast_dtype: torch.dtype | None = None,
) -> int:
    """FLOPs of one forward (infer) or forward + backward (train) pass as ``torch.utils.flop_counter`` counts them.

    Runs on whatever device the model is on; a meta model costs no memory and no time.
    """
    register_flop_formulas()
    device = next(model.parameters()).device
    x = torch.zeros(batch, *input_size, device=device)
    was_training = model.training
    model.train(mode == "train")
    try:
        with FlopCounterMode(display=False) as counter:
            with torch.autocast(device.type if device.type != "meta" else "cpu", dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                if mode == "train":
                    out = model(x)
                else:
                    with torch.no_grad():
                        out = model(x)
            if mode == "train":
                out.float().sum().backward()
    finally:
        model.train(was_training)
    if mode == "train":
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def forward_flops(model: nn.Module, input_size: Sequence[int], batch: int = 1) -> int:
    return counted_flops(model, input_size, batch, mode="infer")


def model_summary(name: str) -> dict:
    """Params and forward GFLOPs at the registered resolution, computed without allocating weights: in closed form
    where it applies (equal to the counter's figure: tests/plan/test_flops.py), otherwise counted on the meta
    device, whose shape-only kernels still cost a good fraction of a second per model."""
    from ..models.registry import create_model, get_model_spec

    with torch.device("meta"):
        model = create_model(name)
    cfg = model.config
    size = cfg.get("img_size") or get_model_spec(name).reference_size
    h, w = (size, size) if isinstance(size, int) else size
    if closed_form_problem(model) is None:
        flops = vit_flops(closed_form_shape_of(model), "infer")["total"]
    else:
        try:
            flops = forward_flops(model, (cfg["in_chans"], h, w))
        except NotImplementedError:  # data-dependent code (NaViT's packing) cannot run on meta tensors: count a real one
            flops = forward_flops(create_model(name), (cfg["in_chans"], h, w))
    return {
        "name": name,
        "params_m": count_params(model) / 1e6,
        "gflops": flops / 1e9,
        "img_size": [h, w],
        "num_classes": cfg["num_classes"],
    }

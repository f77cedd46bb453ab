"""The optimizer: its typed settings, parameter groups, the factory, and one optimizer step.

Shared by the training loop and the planner's measurements (vitkit.plan.measure), so a measured step is the step
`vitkit train` takes. Groups: weight decay only on matrices (never on norms, biases, or what the model lists in
``no_weight_decay()``: position embeddings, class and register tokens); with layer-wise lr decay each depth
(``model.layer_id``) gets its own lr scale, carried in the group as ``lr_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .models.contract import VitkitModel
from .runtime import unwrap_model
from .utils.errors import require


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 2e-3  # the peak learning rate for the effective batch
    weight_decay: float = 0.05  # never applied to norms, biases, position embeddings, class/register tokens
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    layer_decay: float = 1.0  # layer-wise lr decay for fine-tuning: block i gets lr x decay^(depth - i); 1 = off
    impl: Literal["auto", "fused", "foreach", "loop"] = "auto"
    clip_grad_norm: float | None = 1.0  # clip the global gradient norm; None = off

    def validate(self) -> None:
        require(self.lr > 0, "optim.lr", "must be > 0", self.lr)
        require(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        require(all(0.0 <= b < 1.0 for b in self.betas), "optim.betas", "must be two numbers in [0, 1)", self.betas)
        require(0.0 < self.layer_decay <= 1.0, "optim.layer_decay", "must be in (0, 1]", self.layer_decay)
        require(self.clip_grad_norm is None or self.clip_grad_norm > 0, "optim.clip_grad_norm",
                "must be > 0 or null", self.clip_grad_norm)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Parameter groups keyed by (layer scale, decay or not). Each group carries its peak ``lr_scale``."""
    model = unwrap_model(model)
    contract = isinstance(model, VitkitModel)  # a user's own module: decay by shape only, no layer-wise decay
    skip = model.no_weight_decay() if contract else set()
    use_layers = layer_decay < 1.0 and contract
    num_layers = model.num_layers if use_layers else 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name in skip or name.split(".")[0] in skip
        layer = model.layer_id(name) if use_layers else 0
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers - 1 - layer) if use_layers else 1.0
            groups[key] = {
                "params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
        del g["names"]  # optimizer state dicts must hold only tensors and primitives
    impl = cfg.impl
    if impl == "auto":  # fused kernels exist for CUDA and (since torch 2.4) CPU AdamW; SGD fused is CUDA only
        impl = "fused" if (cfg.name == "adamw" or device.type == "cuda") else "foreach"
    flags = {"fused": impl == "fused", "foreach": impl == "foreach"}
    if impl == "loop":
        flags = {"foreach": False}
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **flags)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, **flags)


# One optimizer step is clip_gradients (when clipping or logging the norm) then apply_gradients; between the two the
# gradients are unscaled and final, which is when the training loop reads per-block norms.

def clip_gradients(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, parameters: Iterable[nn.Parameter],
                   clip_grad_norm: float | None = None, need_norm: bool = False) -> torch.Tensor | None:
    """Unscale (fp16) and clip the global gradient norm; returns the norm before clipping, or None when neither
    clipping nor ``need_norm`` asked for it (computing it costs a pass over every gradient)."""
    if not (clip_grad_norm or need_norm):
        return None
    scaler.unscale_(optimizer)
    return torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm or math.inf)


def apply_gradients(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Step (skipped by the scaler when fp16 gradients overflowed), update the loss scale, clear the gradients."""
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


__all__ = ["OptimConfig", "param_groups", "build_optimizer", "clip_gradients", "apply_gradients"]

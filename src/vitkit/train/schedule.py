"""Optimizer parameter groups and learning-rate schedules, all from torch.optim.

Groups: weight decay only on matrices (never on norms, biases, or what the model lists in ``no_weight_decay()``:
position embeddings, class and register tokens), and with layer-wise lr decay each depth (``model.layer_id``) gets
its own lr scale. Schedules are ``LambdaLR`` multipliers of each group's peak lr, stepped once per optimizer step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile / DDP wrappers, whose parameter names the model's helpers understand."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Parameter groups keyed by (layer scale, decay or not). Each group carries its peak ``lr_scale``."""
    model = unwrap_model(model)
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    use_layers = layer_decay < 1.0 and hasattr(model, "layer_id")
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


class LRMultiplier:
    """lr multiplier at an optimizer step: linear warmup, then cosine to a floor, a constant, or steps of gamma.

    A plain callable object (not a closure) so ``LambdaLR.state_dict()`` stores its fields and resume restores them.
    With ``by_progress`` the decay follows ``progress``, the fraction of the run done, which the training loop sets
    before each ``scheduler.step()`` (of a time budget, or of the data when batch sizes vary) instead of counting
    steps; the warmup still counts steps.
    """

    def __init__(self, kind: str, warmup_steps: int, total_steps: int, min_ratio: float, step_every: int,
                 gamma: float, by_progress: bool = False):
        self.by_progress = by_progress
        self.progress = 0.0
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio
        self.step_every = step_every
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** ((step - self.warmup_steps) // self.step_every)
        if self.by_progress:
            progress = min(1.0, self.progress)
        else:
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int,
    by_progress: bool = False,
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(0, total_steps - 1))
    fn = LRMultiplier(cfg.name, warmup, total_steps, cfg.min_lr_ratio,
                      max(1, round(cfg.step_epochs * steps_per_epoch)), cfg.gamma, by_progress)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


__all__ = ["param_groups", "build_optimizer", "build_scheduler", "LRMultiplier", "unwrap_model"]

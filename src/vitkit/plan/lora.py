"""The planner's numbers for a LoRA fine-tune beside a full one (the adapters themselves: vitkit.models.lora)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..models.lora import DEFAULT_TARGETS, lora_parameter_count
from ..models.registry import create_model
from .flops import closed_form_problem, closed_form_shape_of, count_params
from .memory import MemoryEstimate, estimate_memory


def lora_memory(model_name: str, rank: int = 8, batch: int = 32, precision: str = "bf16", optimizer: str = "adamw",
                targets: Sequence[str] = DEFAULT_TARGETS, grad_checkpointing: bool = False,
                **overrides) -> tuple[MemoryEstimate, MemoryEstimate]:
    """The planner's training-memory estimate for full fine-tuning and for LoRA: (full, lora) MemoryEstimates.

    LoRA keeps every weight and (nearly) every activation, but gradients and optimizer states shrink to the
    adapters and the head. Plain-ViT-shaped models only (the planner's domain: vit, deit).
    """
    with torch.device("meta"):
        model = create_model(model_name, **overrides)
    problem = closed_form_problem(model)
    if problem is not None:
        raise ValueError(f"the planner models plain ViTs and DeiT in closed form; not {model_name!r}: {problem}")
    shape = closed_form_shape_of(model)
    params = count_params(model)
    common = dict(mode="train", precision=precision, optimizer=optimizer, grad_checkpointing=grad_checkpointing,
                  num_params=params)
    full = estimate_memory(shape, batch, **common)
    trainable = lora_parameter_count(model, rank, targets)
    adapters = trainable - lora_parameter_count(model, 0, targets)  # the head is already among the params
    lora = estimate_memory(shape, batch, **{**common, "num_params": params + adapters}, trainable_params=trainable)
    return full, lora


__all__ = ["lora_memory"]

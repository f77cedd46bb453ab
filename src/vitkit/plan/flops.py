"""FLOPs measured by PyTorch's own counter on the meta device: exact for the ops that run, no memory used."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, input_size: Sequence[int], batch: int = 1) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass, counted by ``torch.utils.flop_counter`` on meta tensors.

    The model may live on any device; a meta copy is not made, so pass a meta model for huge configurations.
    """
    device = next(model.parameters()).device
    x = torch.zeros(batch, *input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(name: str) -> dict:
    """Params and forward GFLOPs at the registered resolution, computed without allocating weights."""
    from ..models.registry import create_model

    with torch.device("meta"):
        model = create_model(name)
    cfg = model.config
    h, w = cfg["img_size"]
    flops = forward_flops(model, (cfg["in_chans"], h, w))
    return {
        "name": name,
        "params_m": count_params(model) / 1e6,
        "gflops": flops / 1e9,
        "img_size": [h, w],
        "num_classes": cfg["num_classes"],
    }

"""Run a configuration for real and measure what the planner predicts: peak memory and FLOPs.

Peak memory is the largest total of live tensor storage during a steady-state step (the optimizer's states already
exist): on CUDA ``torch.cuda.max_memory_allocated``, elsewhere PyTorch's ``MemTracker``
(torch.distributed._tools.mem_tracker), which follows every tensor storage through the dispatcher.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .flops import _register_cpu_sdpa_formulas


@dataclass
class Measurement:
    peak_bytes: int
    flops: int  # per step (whole batch), as torch.utils.flop_counter counts them
    step_seconds: float
    breakdown: dict[str, int]  # MemTracker categories at the peak (CPU), empty on CUDA

    def as_dict(self) -> dict:
        return asdict(self)


def _autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def build_optimizer(model: nn.Module, name: str, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer `vitkit train` would build (its parameter groups and kernel choice), so measurements match."""
    from ..train.config import OptimConfig
    from ..train.optim import build_optimizer as engine_optimizer

    return engine_optimizer(model, OptimConfig(name=name, lr=1e-4), device)


def measure_step(
    model: nn.Module,
    batch: int,
    mode: str = "train",
    precision: str = "fp32",
    optimizer: str = "adamw",
    grad_checkpointing: bool = False,
    device: str | torch.device = "cpu",
    steps: int = 1,
) -> Measurement:
    """Measure peak memory and counted FLOPs of ``steps`` steady-state steps after one warm-up step."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_formulas()
    device = torch.device(device)
    model = model.to(device)
    cfg = model.config
    h, w = cfg["img_size"]
    x = torch.randn(batch, cfg["in_chans"], h, w, device=device)
    num_classes = max(cfg.get("num_classes", 0), 1)
    y = torch.randint(0, num_classes, (batch,), device=device)
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(grad_checkpointing)

    if mode == "train":
        model.train()
        opt = build_optimizer(model, optimizer, device)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

        def step() -> None:
            with _autocast(device, precision):
                out = model(x)
                loss = nn.functional.cross_entropy(out.float(), y) if out.shape[-1] > 1 else out.float().mean()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
    else:
        model.eval()
        if precision in ("bf16", "fp16"):
            model = model.to({"bf16": torch.bfloat16, "fp16": torch.float16}[precision])
            x = x.to(next(model.parameters()).dtype)
        if precision == "int8":
            raise ValueError("int8 is estimated, not measured: dynamically quantized weights are opaque to trackers")

        def step() -> None:
            with torch.inference_mode():
                model(x)

    # The warm-up step (it creates the optimizer states) is the one whose FLOPs are counted: the counter's module
    # hooks hold references that would distort a memory measurement of the same step.
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    breakdown: dict[str, int] = {}
    peak = 0
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        from torch.distributed._tools.mem_tracker import MemTracker

        tracker = MemTracker()
        tracker.track_external(model, *([opt] if mode == "train" else []), x, y)
        for _ in range(steps):  # MemTracker follows one iteration at a time
            with tracker:
                step()
            snap = tracker.get_tracker_snapshot("peak")[device]
            if snap["Total"] > peak:
                peak = int(snap["Total"])
                breakdown = {str(getattr(k, "value", k)): int(v) for k, v in snap.items() if k != "Total"}
            tracker.reset_mod_stats()
    seconds = (time.perf_counter() - t0) / steps
    return Measurement(peak_bytes=peak, flops=int(flops), step_seconds=seconds, breakdown=breakdown)

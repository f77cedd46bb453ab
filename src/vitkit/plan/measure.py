"""Run a configuration and measure what the planner predicts: peak memory and FLOPs.

Peak memory is the largest total of live tensor storage during a steady-state step (the optimizer's states already
exist): on CUDA ``torch.cuda.max_memory_allocated``, elsewhere PyTorch's ``MemTracker``
(torch.distributed._tools.mem_tracker), which follows every tensor storage through the dispatcher.

``execute="fake"`` runs the same step under ``FakeTensorMode``: PyTorch dispatches every op, autograd, autocast and
checkpointing exactly as for real tensors (same shapes, dtypes, views and storage sharing) but does no arithmetic.
It agrees with real execution to a few hundred bytes (tests/plan/test_measure.py checks it), and makes large or bf16
configurations measurable on a CPU without AVX-512 BF16, where a bf16 training step of ViT-B/16 at 384 px would take
hours. FLOPs are always counted on a fake copy of the step: the counter only reads shapes, and its module hooks would
otherwise hold references that distort a memory measurement of the same step.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from ..optim import OptimConfig, apply_gradients, build_optimizer
from ..runtime import amp_context, precision_dtype
from .flops import register_flop_formulas

EXECUTIONS = ("real", "fake")


@dataclass
class Measurement:
    peak_bytes: int
    flops: int  # per step (whole batch), as torch.utils.flop_counter counts them
    step_seconds: float | None  # None for fake execution
    breakdown: dict[str, int]  # MemTracker categories at the peak; empty on CUDA
    execute: str = "real"

    def as_dict(self) -> dict:
        return asdict(self)


def measured_optimizer(model: nn.Module, name: str, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer `vitkit train` would build (its parameter groups and kernel choice), so measurements match."""
    return build_optimizer(model, OptimConfig(name=name, lr=1e-4), device)


def _fake_parameters(model: nn.Module, mode: FakeTensorMode, device: torch.device, dtype: torch.dtype | None) -> None:
    """Replace every parameter and buffer by a fake tensor of the same shape (in ``dtype`` if given), in place."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                with mode:
                    fake = torch.empty(p.shape, dtype=dtype or p.dtype, device=device)
                module._parameters[name] = nn.Parameter(fake, requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                with mode:
                    module._buffers[name] = torch.empty(b.shape, dtype=dtype if b.is_floating_point() and dtype else b.dtype,
                                                        device=device)


def _low_precision_dtype(precision: str) -> torch.dtype | None:
    """The dtype inference casts the weights to; None for fp32 (nothing to cast)."""
    return None if precision == "fp32" else precision_dtype(precision)


def _make_step(model: nn.Module, batch: int, mode: str, precision: str, optimizer: str, device: torch.device
               ) -> tuple[Callable[[], None], list]:
    """One training or inference step on random data, and the objects a memory tracker should know about."""
    cfg = model.config
    h, w = cfg["img_size"]
    x = torch.randn(batch, cfg["in_chans"], h, w, device=device)
    y = torch.randint(0, max(cfg.get("num_classes", 0), 1), (batch,), device=device)
    if mode == "infer":
        model.eval()
        if precision in ("bf16", "fp16"):
            x = x.to(next(model.parameters()).dtype)

        def infer_step() -> None:
            with torch.inference_mode():
                model(x)

        return infer_step, [model, x]

    model.train()
    opt = measured_optimizer(model, optimizer, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    for p in model.parameters():  # create the optimizer states without a forward pass: steady state from step one
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)

    def train_step() -> None:  # the training loop's forward, loss and optimizer step (without clipping)
        with amp_context(device, precision):
            out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y)
        scaler.scale(loss).backward()
        apply_gradients(opt, scaler)

    return train_step, [model, opt, x, y]


def _prepare(model: nn.Module, mode: str, precision: str, ckpt: bool, device: torch.device) -> nn.Module:
    model.set_grad_checkpointing(ckpt)
    if mode == "infer" and precision in ("bf16", "fp16"):
        model = model.to(precision_dtype(precision))
    return model.to(device)


def fake_copy(model: nn.Module, device: torch.device, dtype: torch.dtype | None = None
              ) -> tuple[nn.Module, FakeTensorMode]:
    """A copy of ``model`` whose parameters and buffers are fake tensors on ``device``, and the mode to run it in."""
    fake_mode = FakeTensorMode()
    with torch.device("meta"):
        twin = copy.deepcopy(model).to("meta")
    _fake_parameters(twin, fake_mode, device, dtype)
    return twin, fake_mode


def count_step_flops(model: nn.Module, batch: int, mode: str = "train", precision: str = "fp32",
                     grad_checkpointing: bool = False, device: str | torch.device = "cpu") -> int:
    """FLOPs of one step as torch's counter sees it, on a fake copy (no memory, no arithmetic)."""
    register_flop_formulas()
    device = torch.device(device)
    dtype = _low_precision_dtype(precision) if mode == "infer" else None
    twin, fake_mode = fake_copy(model, device, dtype)
    twin.set_grad_checkpointing(grad_checkpointing)
    with fake_mode:
        step, _ = _make_step(twin, batch, mode, precision, "adamw", device)
        with FlopCounterMode(display=False) as counter:
            step()
    return int(counter.get_total_flops())


def measure_step(
    model: nn.Module,
    batch: int,
    mode: str = "train",
    precision: str = "fp32",
    optimizer: str = "adamw",
    grad_checkpointing: bool = False,
    device: str | torch.device = "cpu",
    execute: str = "real",
) -> Measurement:
    """Measure peak memory of one steady-state step, and its FLOPs.

    With ``execute="fake"`` the model's parameters are replaced by fake tensors (the model is consumed).
    """
    if execute not in EXECUTIONS:
        raise ValueError(f"execute must be one of {EXECUTIONS}, got {execute!r}")
    if precision == "int8":
        raise ValueError("int8 is estimated, not measured: dynamically quantized weights are opaque to trackers")
    device = torch.device(device)
    flops = count_step_flops(model, batch, mode, precision, grad_checkpointing, device)

    if execute == "fake":
        if device.type == "cuda":
            raise ValueError("fake execution is measured with MemTracker; on CUDA measure for real")
        from torch.distributed._tools.mem_tracker import MemTracker

        fake_mode = FakeTensorMode()
        dtype = _low_precision_dtype(precision) if mode == "infer" else None
        _fake_parameters(model, fake_mode, device, dtype)
        model.set_grad_checkpointing(grad_checkpointing)
        with fake_mode:
            step, tracked = _make_step(model, batch, mode, precision, optimizer, device)
            tracker = MemTracker()
            tracker.track_external(*tracked)
            with tracker:
                step()
        snap = tracker.get_tracker_snapshot("peak")[device]
        breakdown = {str(getattr(k, "value", k)): int(v) for k, v in snap.items() if k != "Total"}
        return Measurement(int(snap["Total"]), flops, None, breakdown, execute)

    model = _prepare(model, mode, precision, grad_checkpointing, device)
    step, tracked = _make_step(model, batch, mode, precision, optimizer, device)
    breakdown: dict[str, int] = {}
    t0 = time.perf_counter()
    if device.type == "cuda":
        step()  # warm-up: cuBLAS handles and workspaces are not the model's memory
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        from torch.distributed._tools.mem_tracker import MemTracker

        tracker = MemTracker()
        tracker.track_external(*tracked)
        with tracker:
            step()
        snap = tracker.get_tracker_snapshot("peak")[device]
        peak = int(snap["Total"])
        breakdown = {str(getattr(k, "value", k)): int(v) for k, v in snap.items() if k != "Total"}
    return Measurement(peak, flops, time.perf_counter() - t0, breakdown, execute)

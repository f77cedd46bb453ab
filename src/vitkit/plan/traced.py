"""Cost of architectures the closed form does not describe (LeViT, CrossViT): read off a run on the meta device.

The closed form (flops.py, memory.py) knows the plain ViT's blocks term by term. For other architectures the planner
runs the model once on the ``meta`` device (shapes only, no memory, no arithmetic) and reads:
- FLOPs from ``torch.utils.flop_counter`` (forward, and forward + backward for a training step);
- the activations autograd saves for backward, from ``torch.autograd.graph.saved_tensors_hooks``: every saved
  tensor's storage once (views share it), parameters excluded. Two batch sizes give bytes = fixed + per-image x B,
  which sizes any micro-batch without another run. Under bf16/fp16 the model is traced in that dtype (autocast keeps
  a few ops in fp32, so this slightly underestimates them) and autocast's weight copies are added (2 bytes/param).

The peak is bounded as weights + optimizer states + all saved activations + all gradients at once (the closed form
is sharper: the first gradients appear as activations are freed). Inference keeps no graph: its peak is bounded by
the largest input + output of any one layer, twice (a residual stream alive beside it). Gradient checkpointing and
FSDP are not modelled on this path; the planner says so rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .flops import count_params, counted_flops
from .memory import OPTIMIZERS, MemoryEstimate

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TracedShape:
    """What the planner needs of a model it cannot describe in closed form; all bytes for the given precision."""

    name: str
    img_size: tuple[int, int]
    in_chans: int
    params: int
    flops_forward: int  # per image
    flops_train: int  # per image, forward + backward
    saved_fixed: int  # bytes saved for backward independent of the batch (autocast's weight casts)
    saved_per_image: int  # bytes saved for backward per image
    layer_io_per_image: int  # largest input + output of one layer, per image (inference)


def _input(model: nn.Module, batch: int, dtype: torch.dtype) -> torch.Tensor:
    h, w = model.config["img_size"]
    return torch.zeros(batch, model.config.get("in_chans", 3), h, w, device="meta", dtype=dtype)


def saved_activation_bytes(model: nn.Module, batch: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes autograd saves for backward in one training forward of a (meta) model: each storage once."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(_input(model, batch, dtype))
    return sum(saved.values())


def largest_layer_io_bytes(model: nn.Module, batch: int, dtype: torch.dtype = torch.float32) -> int:
    """The largest input + output bytes of any leaf module in one inference forward (meta)."""
    largest = 0

    def hook(module, args, output) -> None:
        nonlocal largest
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [output] if isinstance(output, torch.Tensor) else [o for o in output if isinstance(o, torch.Tensor)]
        largest = max(largest, sum(t.numel() * t.element_size() for t in tensors))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.eval()
        with torch.no_grad():
            model(_input(model, batch, dtype))
    finally:
        for h in handles:
            h.remove()
    return largest


def trace_shape(name: str, model: nn.Module, precision: str) -> TracedShape:
    """Trace a meta model at batch 2 and 4 (BatchNorm needs more than one image to train)."""
    if precision not in _DTYPES:
        raise ValueError(f"{type(model).__name__} is planned from a traced run, which has no {precision!r} "
                         f"(int8 weights are estimated for the plain ViT only); use fp32, bf16 or fp16")
    h, w = model.config["img_size"]
    chans = model.config.get("in_chans", 3)
    params = count_params(model)
    fwd = counted_flops(model, (chans, h, w), 2, "infer") // 2
    train = counted_flops(model, (chans, h, w), 2, "train") // 2
    dtype = _DTYPES[precision]
    traced = model.to(dtype) if dtype != torch.float32 else model
    s2, s4 = saved_activation_bytes(traced, 2, dtype), saved_activation_bytes(traced, 4, dtype)
    per_image = (s4 - s2) // 2
    fixed = max(s2 - 2 * per_image, 0) + (2 * params if dtype != torch.float32 else 0)
    io = largest_layer_io_bytes(traced, 2, dtype) // 2
    return TracedShape(name, (h, w), chans, params, fwd, train, fixed, per_image, io)


def traced_memory(shape: TracedShape, batch: int, mode: str, precision: str, optimizer: str) -> MemoryEstimate:
    """Peak bytes of one step at ``batch`` images (see the module docstring for the bound)."""
    act_bytes = _DTYPES[precision].itemsize
    inputs = batch * shape.in_chans * shape.img_size[0] * shape.img_size[1] * 4 + batch * 8
    notes = [f"{shape.name}: traced on the meta device (saved tensors + flop_counter), not the ViT closed form"]
    if mode == "infer":
        weights = shape.params * act_bytes
        activations = 2 * shape.layer_io_per_image * batch
        peak = weights + inputs + activations
        return MemoryEstimate(weights=weights, gradients=0, optimizer_states=0, optimizer_temporaries=0,
                              weight_copies=0, activations=activations, attention_workspace=0, transient=0,
                              inputs=inputs, peak=peak, total=peak, peak_phase="forward", notes=notes)
    weights, grads = 4 * shape.params, 4 * shape.params
    state_pp, temp_pp = OPTIMIZERS[optimizer]
    states, temps = state_pp * shape.params, temp_pp * shape.params
    copies = 2 * shape.params if act_bytes == 2 else 0
    activations = shape.saved_fixed - copies + shape.saved_per_image * batch
    backward = weights + states + copies + activations + grads
    step = weights + states + grads + temps
    phase, peak = max((("backward (bound)", backward), ("optimizer step", step)), key=lambda p: p[1])
    return MemoryEstimate(weights=weights, gradients=grads, optimizer_states=states, optimizer_temporaries=temps,
                          weight_copies=copies, activations=activations, attention_workspace=0, transient=0,
                          inputs=inputs, peak=peak + inputs, total=peak + inputs, peak_phase=phase, notes=notes)


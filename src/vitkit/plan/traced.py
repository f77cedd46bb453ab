"""Cost of architectures the closed form does not describe (LeViT, CrossViT): read off a run on fake tensors.

The closed form (flops.py, memory.py) knows the plain ViT's blocks term by term. For other architectures the planner
runs the model on fake CPU tensors (``FakeTensorMode``: real dispatch, so attention takes the kernel a real run
takes and saves what it saves, but no memory and no arithmetic) and reads:
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

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..runtime import PRECISION_DTYPES
from .flops import count_params
from .measure import count_step_flops, fake_copy
from .memory import OPTIMIZERS, MemoryEstimate


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


def _run_fake(model: nn.Module, batch: int, dtype: torch.dtype, train: bool, hooks) -> None:
    """One forward of a fake CPU copy of ``model`` (no memory, no arithmetic, real kernels' saved tensors)."""
    twin, fake_mode = fake_copy(model, torch.device("cpu"), None if dtype == torch.float32 else dtype)
    h, w = model.config["img_size"]
    twin.train(train)
    with fake_mode, hooks(twin), torch.set_grad_enabled(train):
        twin(torch.zeros(batch, model.config.get("in_chans", 3), h, w, dtype=dtype))


def saved_activation_bytes(model: nn.Module, batch: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes autograd saves for backward in one training forward: each storage once, parameters excluded."""
    saved: dict[int, int] = {}

    @contextlib.contextmanager
    def hooks(twin: nn.Module):
        params = {p.untyped_storage()._cdata for p in twin.parameters()}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage._cdata not in params:
                saved[storage._cdata] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield

    _run_fake(model, batch, dtype, True, hooks)
    return sum(saved.values())


def largest_layer_io_bytes(model: nn.Module, batch: int, dtype: torch.dtype = torch.float32) -> int:
    """The largest input + output bytes of any leaf module in one inference forward."""
    largest = 0

    def hook(module, args, output) -> None:
        nonlocal largest
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [output] if isinstance(output, torch.Tensor) else [o for o in output if isinstance(o, torch.Tensor)]
        largest = max(largest, sum(t.numel() * t.element_size() for t in tensors))

    @contextlib.contextmanager
    def hooks(twin: nn.Module):
        handles = [m.register_forward_hook(hook) for m in twin.modules() if not list(m.children())]
        yield
        for h in handles:
            h.remove()

    _run_fake(model, batch, dtype, False, hooks)
    return largest


def trace_shape(name: str, model: nn.Module, precision: str) -> TracedShape:
    """Trace fake copies of a (meta) model at batch 2 and 4 (BatchNorm needs more than one image to train)."""
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"{type(model).__name__} is planned from a traced run, which has no {precision!r} "
                         f"(int8 weights are estimated for the plain ViT only); use fp32, bf16 or fp16")
    h, w = model.config["img_size"]
    chans = model.config.get("in_chans", 3)
    params = count_params(model)
    # FLOPs on fake CPU tensors rather than meta ones: SDPA then takes the kernel a real run takes (the meta
    # device decomposes it, and the counter's backward formulas differ by kernel)
    fwd = count_step_flops(model, 2, "infer") // 2
    train = count_step_flops(model, 2, "train") // 2
    dtype = PRECISION_DTYPES[precision]
    s2, s4 = saved_activation_bytes(model, 2, dtype), saved_activation_bytes(model, 4, dtype)
    per_image = (s4 - s2) // 2
    fixed = max(s2 - 2 * per_image, 0) + (2 * params if dtype != torch.float32 else 0)
    io = largest_layer_io_bytes(model, 2, dtype) // 2
    return TracedShape(name, (h, w), chans, params, fwd, train, fixed, per_image, io)


def traced_memory(shape: TracedShape, batch: int, mode: str, precision: str, optimizer: str) -> MemoryEstimate:
    """Peak bytes of one step at ``batch`` images (see the module docstring for the bound)."""
    act_bytes = PRECISION_DTYPES[precision].itemsize
    inputs = batch * shape.in_chans * shape.img_size[0] * shape.img_size[1] * 4 + batch * 8
    notes = [f"{shape.name}: traced on fake tensors (saved tensors + flop_counter), not the ViT closed form"]
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


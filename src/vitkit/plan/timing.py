"""Step time of a ViT on a GPU, from the kernels the step launches.

Each kernel is a roofline point: its tensor-core FLOPs and the bytes it moves to and from device memory. Its time is
the larger of FLOPs / (peak x matmul efficiency) and bytes / (bandwidth x bandwidth efficiency), never less than the
host's per-kernel dispatch time; a step is the sum of its kernels plus a fixed per-step overhead. Matmul efficiency
depends on the matmul's shape: a large matmul reaches ``matmul_efficiency`` of the card's dense peak, and a matmul
whose smallest dimension (width, head dimension) is ``matmul_half_size`` reaches half of that, because its tiles do
too little work per byte of operand loaded.

The kernel list follows eager PyTorch under autocast on CUDA: the residual stream is fp32 (fp32 parameters are
added to it), LayerNorm and softmax run and return fp32 (autocast's fp32 list), the inputs of every matmul are cast
to the low precision by a separate kernel, GELU runs in the low precision, a Linear's bias gradient is a separate
reduction, and the weights are cast once per step. Explicit attention is eager ``softmax(q @ k^T * scale) @ v``
(q, k, v copied out of the fused qkv projection, the scores scaled by a kernel of their own); fused attention is
one flash kernel forward and one backward, reading q, k, v in place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .flops import ViTShape
from .gpus import Accelerator

R = 4  # bytes of a residual-stream element: fp32 under autocast too


@dataclass(frozen=True)
class Kernel:
    name: str
    flops: float  # tensor-core FLOPs of all its launches (matmuls, convolutions, attention); 0: memory-bound
    bytes: float  # device-memory traffic of all its launches
    size: int = 0  # the matmul's smallest dimension; 0 for memory-bound kernels
    count: int = 1  # launches of this kernel per step


@dataclass(frozen=True)
class TimeConstants:
    """The few physical constants of the time model (fitted values: see FITTED)."""

    matmul_efficiency: float  # fraction of the dense tensor-core peak a large matmul reaches
    matmul_half_size: float  # smallest matmul dimension at which it reaches half of that
    bandwidth_efficiency: float  # fraction of the data-sheet bandwidth a streaming kernel reaches
    kernel_dispatch_s: float  # eager PyTorch's host time per kernel: a kernel never takes less
    step_overhead_s: float  # fixed per step (Python, optimizer bookkeeping, synchronisation)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# Fitted on timm's published RTX 3090 AMP training and RTX 4090 AMP inference tables (their ViT and DeiT rows);
# benchmarks/results/plan_gpu_validation.json holds the fit, every row predicted vs published, and the errors.
FITTED = TimeConstants(
    matmul_efficiency=1.0,
    matmul_half_size=7.9,
    bandwidth_efficiency=0.833,
    kernel_dispatch_s=5e-6,
    step_overhead_s=1e-3,
)


@dataclass
class StepTime:
    seconds: float
    compute_seconds: float  # time of the kernels whose FLOPs bound them
    memory_seconds: float  # time of the kernels whose bytes bound them
    overhead_seconds: float  # dispatch-bound kernels and the per-step overhead
    images_per_second: float
    bound: str  # "compute", "memory" or "overhead": what takes most of the step
    tflops_achieved: float

    def as_dict(self) -> dict:
        return asdict(self)


def _linear(name: str, tokens: int, k: int, n: int, a: int, training: bool, bias: bool = True) -> list[Kernel]:
    """A Linear (tokens x k) @ (k x n): forward, and in training its input and weight gradients and bias grad."""
    flops = 2 * tokens * k * n
    size = min(k, n)
    out = [Kernel(name, flops, a * (tokens * k + tokens * n + k * n), size)]
    if training:
        out.append(Kernel(f"{name} dgrad", flops, a * (tokens * n + k * n + tokens * k), size))
        out.append(Kernel(f"{name} wgrad", flops, a * (tokens * n + tokens * k + k * n), size))
        if bias:
            out.append(Kernel(f"{name} bias grad", 0, a * tokens * n))
    return out


def block_kernels(shape: ViTShape, batch: int, training: bool, a: int, autocast: bool,
                  fused_attention: bool) -> list[Kernel]:
    """The kernels of one transformer block (forward, and backward when training)."""
    n = shape.block_tokens(training)
    d, m, h = shape.embed_dim, shape.mlp_hidden, shape.num_heads
    hd = d // h
    t = batch * n  # tokens
    td = t * d
    scores = batch * h * n * n  # elements of one (B, H, N, N) matrix
    r = R if autocast else a
    cast = (r + a) * td if autocast else 0
    ks: list[Kernel] = []

    def norm_and_cast(name: str) -> None:
        ks.append(Kernel(name, 0, 2 * r * td))
        if autocast:
            ks.append(Kernel(f"{name} cast", 0, cast))

    norm_and_cast("norm1")
    ks += _linear("qkv", t, d, 3 * d, a, training, shape.qkv_bias)
    attn_flops = 4 * t * n * d  # QK^T and PV
    if fused_attention:
        ks.append(Kernel("flash attention", attn_flops, 4 * a * td, hd))
        if training:  # recomputes the scores: five matmuls; reads q, k, v, o, dO and writes dq, dk, dv
            ks.append(Kernel("flash attention backward", 2.5 * attn_flops, 10 * a * td, hd))
    else:
        p = 4 if autocast else a  # softmax output: fp32 under autocast
        ks.append(Kernel("q, k, v copies", 0, 2 * a * 3 * td, count=3))
        ks.append(Kernel("q @ k^T", attn_flops / 2, a * (2 * td + scores), min(hd, n)))
        ks.append(Kernel("scale", 0, 2 * a * scores))
        if autocast:  # softmax is on autocast's fp32 list: its input is cast to fp32 by a kernel of its own
            ks.append(Kernel("scores cast", 0, (a + p) * scores))
        ks.append(Kernel("softmax", 0, 2 * p * scores))
        if autocast:
            ks.append(Kernel("probabilities cast", 0, (p + a) * scores))
        ks.append(Kernel("attn @ v", attn_flops / 2, a * (scores + 2 * td), min(hd, n)))
        ks.append(Kernel("merge heads", 0, 2 * a * td))
        if training:
            ks.append(Kernel("merge heads backward", 0, 2 * a * td))
            for name in ("d(attn) = dO @ v^T", "dv = attn^T @ dO", "dq = dS @ k", "dk = dS^T @ q"):
                ks.append(Kernel(name, attn_flops / 2, a * (scores + 2 * td), min(hd, n)))
            if autocast:
                ks.append(Kernel("probabilities cast backward", 0, (a + p) * scores))
            ks.append(Kernel("softmax backward", 0, 3 * p * scores))
            if autocast:
                ks.append(Kernel("scores cast backward", 0, (p + a) * scores))
            ks.append(Kernel("scale backward", 0, 2 * a * scores))
            ks.append(Kernel("q, k, v copies backward", 0, 2 * a * 3 * td, count=3))
    ks += _linear("proj", t, d, d, a, training)
    ks.append(Kernel("residual add", 0, (2 * r + a) * td))
    norm_and_cast("norm2")
    ks += _linear("fc1", t, d, m, a, training)
    ks.append(Kernel("gelu", 0, 2 * a * t * m))
    ks += _linear("fc2", t, m, d, a, training)
    ks.append(Kernel("residual add", 0, (2 * r + a) * td))
    if training:
        ks.append(Kernel("gelu backward", 0, 3 * a * t * m))
        for name in ("norm1", "norm2"):  # dX pass, then the dgamma/dbeta reduction reading X and dY again
            ks.append(Kernel(f"{name} backward", 0, 5 * r * td, count=2))
            if autocast:
                ks.append(Kernel(f"{name} cast backward", 0, cast))
        for _ in range(2):  # the branch's gradient cast to the low precision, then summed into the residual's
            ks.append(Kernel("residual gradient", 0, ((r + a) if autocast else 0) * td + 3 * r * td))
    return ks


def step_kernels(shape: ViTShape, batch: int, mode: str = "train", precision: str = "bf16",
                 fused_attention: bool = True, optimizer: str = "adamw", num_params: int = 0,
                 grad_checkpointing: bool = False) -> list[Kernel]:
    """Every kernel of one step of ``batch`` images: embedding, blocks, head, and in training the optimizer."""
    training = mode == "train"
    autocast = precision in ("bf16", "fp16")
    a = 4 if precision == "fp32" else 2
    r = R if autocast else a
    d, n, g = shape.embed_dim, shape.block_tokens(training), shape.grid_tokens
    pixels = batch * shape.in_chans * shape.img_size[0] * shape.img_size[1]
    patch_k = shape.in_chans * shape.patch_size**2
    ks = [Kernel("input cast", 0, (4 + a) * pixels)] if autocast else []
    ks.append(Kernel("patch embedding", 2 * batch * g * patch_k * d, a * (pixels + batch * g * d), min(patch_k, d)))
    ks.append(Kernel("tokens + position", 0, (a + 3 * r) * batch * n * d, count=2))
    block = block_kernels(shape, batch, training, a, autocast, fused_attention)
    ks += [Kernel(k.name, k.flops * shape.depth, k.bytes * shape.depth, k.size, k.count * shape.depth) for k in block]
    if training and grad_checkpointing:  # the forward rerun block by block in backward
        forward = block_kernels(shape, batch, False, a, autocast, fused_attention)
        ks += [Kernel(f"recompute {k.name}", k.flops * shape.depth, k.bytes * shape.depth, k.size,
                      k.count * shape.depth) for k in forward]
    ks.append(Kernel("final norm", 0, 2 * r * batch * n * d))
    ks += _linear("head", batch, d, shape.num_classes * shape.classifier_heads, a, training)
    if training:
        ks.append(Kernel("patch embedding wgrad", 2 * batch * g * patch_k * d, a * (pixels + batch * g * d),
                         min(patch_k, d)))
        ks.append(Kernel("final norm backward", 0, 5 * r * batch * n * d, count=2))
        state_bytes = {"adamw": 28, "sgd": 20}.get(optimizer, 28)  # read p, g, states; write p, states (fp32)
        ks.append(Kernel("optimizer step", 0, state_bytes * num_params, count=max(1, 4 * shape.depth)))
    if autocast:  # weights cast once per step, and (training) their gradients cast back to fp32
        ks.append(Kernel("weight casts", 0, ((4 + a) + ((a + 4) if training else 0)) * num_params,
                         count=6 * shape.depth))
    return ks


def matmul_efficiency(size: int, constants: TimeConstants = FITTED) -> float:
    return constants.matmul_efficiency * size / (size + constants.matmul_half_size)


def step_time(kernels: list[Kernel], acc: Accelerator, precision: str, batch: int,
              constants: TimeConstants = FITTED) -> StepTime:
    """Seconds per step on ``acc`` (the module doc's model), and what bounds it."""
    peak = acc.peak_tflops(precision) * 1e12
    bandwidth = acc.bandwidth_gbs * 1e9 * constants.bandwidth_efficiency
    if not peak or not bandwidth:
        raise ValueError(f"{acc.name} has no peak rate or bandwidth to time a step on")
    compute = memory = overhead = 0.0
    flops = 0.0
    for k in kernels:
        each_flops, each_bytes = k.flops / k.count, k.bytes / k.count
        t_compute = each_flops / (peak * matmul_efficiency(k.size, constants)) if k.flops else 0.0
        t_memory = each_bytes / bandwidth
        t = max(t_compute, t_memory, constants.kernel_dispatch_s)
        if t == constants.kernel_dispatch_s and t > max(t_compute, t_memory):
            overhead += t * k.count
        elif t_compute >= t_memory:
            compute += t * k.count
        else:
            memory += t * k.count
        flops += k.flops
    overhead += constants.step_overhead_s
    seconds = compute + memory + overhead
    parts = {"compute": compute, "memory": memory, "overhead": overhead}
    return StepTime(seconds=seconds, compute_seconds=compute, memory_seconds=memory, overhead_seconds=overhead,
                    images_per_second=batch / seconds, bound=max(parts, key=parts.get),
                    tflops_achieved=flops / seconds / 1e12)

"""Accelerators the planner knows: usable memory and dense peak throughput, from the vendors' data sheets.

Tensor-core figures are dense (no sparsity) with FP32 accumulation, which is what mixed-precision training uses;
GeForce cards run that at half their FP16-accumulate rate. ``fp32`` is the plain (non-TF32) FP32 rate.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: int  # usable device memory as the driver reports it
    bf16_tflops: float | None  # None: no bf16 support (Turing); fp16 is used instead
    fp16_tflops: float
    fp32_tflops: float
    cuda: bool = True

    def peak_tflops(self, precision: str) -> float:
        if precision == "bf16":
            if self.bf16_tflops is None:
                raise ValueError(f"{self.name} has no bf16 support; use fp16 with a GradScaler")
            return self.bf16_tflops
        if precision in ("fp16", "int8"):
            return self.fp16_tflops
        return self.fp32_tflops


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in [
        Accelerator("T4-16GB", 15360 * 1024**2, None, 65.0, 8.1),
        Accelerator("RTX3060-12GB", 12288 * 1024**2, 25.6, 25.6, 12.7),
        Accelerator("RTX3090-24GB", 24576 * 1024**2, 35.6, 35.6, 35.6),
        Accelerator("RTX4090-24GB", 24564 * 1024**2, 165.2, 165.2, 82.6),
        Accelerator("L4-24GB", 23034 * 1024**2, 121.0, 121.0, 30.3),
        Accelerator("A100-40GB", 40960 * 1024**2, 312.0, 312.0, 19.5),
        Accelerator("A100-80GB", 81920 * 1024**2, 312.0, 312.0, 19.5),
        Accelerator("H100-80GB", 81559 * 1024**2, 989.0, 989.0, 67.0),
        Accelerator("H200-141GB", 143771 * 1024**2, 989.0, 989.0, 67.0),
    ]
}

# What a CUDA process holds beyond its tensors: the context and library workspaces (not in the caching allocator),
# and the allocator's block rounding and fragmentation, taken as a fraction of the tensor peak.
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
ALLOCATOR_OVERHEAD = 0.08


def cpu_accelerator(memory_gib: float, tflops: float | None = None) -> Accelerator:
    """A CPU host as a target: ``cpu:64`` means 64 GiB; throughput is measured if not given."""
    rate = tflops or 0.0
    return Accelerator(f"CPU-{memory_gib:g}GB", int(memory_gib * GIB), rate, rate, rate, cuda=False)


def get_accelerator(name: str) -> Accelerator:
    if name.lower().startswith("cpu"):
        _, _, size = name.partition(":")
        try:
            return cpu_accelerator(float(size) if size else 16.0)
        except ValueError:
            raise ValueError(f"bad CPU target {name!r}: write cpu:<GiB>, e.g. cpu:64") from None
    lookup = {k.lower(): v for k, v in ACCELERATORS.items()}
    key = name.lower()
    if key in lookup:
        return lookup[key]
    matches = [v for k, v in lookup.items() if k.startswith(key) or key in k]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)} or cpu:<GiB>")


def overhead_bytes(acc: Accelerator, peak: int) -> int:
    """Memory beyond the tensors: context + allocator on CUDA, nothing counted on a CPU host."""
    return CUDA_CONTEXT_BYTES + int(ALLOCATOR_OVERHEAD * peak) if acc.cuda else 0

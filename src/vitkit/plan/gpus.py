"""Accelerators the planner knows: usable memory, memory bandwidth and dense peak throughput per precision.

Every figure is the vendor's published specification (source beside each card). Tensor-core rates are dense (no
2:4 sparsity) with FP32 accumulation, which is what PyTorch's fp16/bf16 matmuls use (cuBLAS compute type 32F);
GeForce cards run that at half their FP16-accumulate rate, and their data sheets' headline is the FP16-accumulate
(often sparse) one. ``tf32`` is the TF32 tensor-core rate, ``fp32`` the plain FP32 (CUDA core) rate, which is what
a float32 matmul runs at in PyTorch by default (``torch.backends.cuda.matmul.allow_tf32`` is off).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: int  # usable device memory as the driver reports it
    bf16_tflops: float | None  # None: no bf16 support (Turing, Volta); fp16 is used instead
    fp16_tflops: float
    fp32_tflops: float
    tf32_tflops: float | None = None  # None: no TF32 tensor cores (before Ampere)
    bandwidth_gbs: float = 0.0  # memory bandwidth, GB/s (1e9 bytes)
    cuda: bool = True
    source: str = ""

    def peak_tflops(self, precision: str) -> float:
        if precision == "bf16":
            if self.bf16_tflops is None:
                raise ValueError(f"{self.name} has no bf16 support; use fp16 with a GradScaler")
            return self.bf16_tflops
        if precision in ("fp16", "int8"):
            return self.fp16_tflops
        if precision == "tf32":
            return self.tf32_tflops or self.fp32_tflops
        return self.fp32_tflops

    @property
    def model_name(self) -> str:
        """The card without its memory size: ``A100`` of ``A100-40GB`` (what a user types)."""
        return re.sub(r"-\d+GB$", "", self.name)


_NV = "https://www.nvidia.com/content/"
ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in [
        # Turing / Volta: FP16 tensor cores only (the T4's 65 TFLOPS is its FP16/FP32 mixed-precision rate)
        Accelerator("T4-16GB", 15360 * MIB, None, 65.0, 8.1, None, 320.0,
                    source="NVIDIA T4 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/tesla-t4)"),
        Accelerator("V100-16GB", 16160 * MIB, None, 125.0, 15.7, None, 900.0,
                    source="NVIDIA V100 datasheet, SXM2 (nvidia.com/en-us/data-center/v100)"),
        Accelerator("V100-32GB", 32510 * MIB, None, 125.0, 15.7, None, 900.0,
                    source="NVIDIA V100 datasheet, SXM2 (nvidia.com/en-us/data-center/v100)"),
        # GeForce: dense FP16/BF16 with FP32 accumulate = half the FP16-accumulate rate
        Accelerator("RTX3060-12GB", 12288 * MIB, 25.6, 25.6, 12.7, 12.7, 360.0,
                    source="NVIDIA Ampere GA102 whitepaper (GA10x per-SM rates) x 28 SMs at 1.78 GHz; "
                           "GeForce RTX 3060 specifications page for memory and bandwidth"),
        Accelerator("RTX3090-24GB", 24576 * MIB, 71.0, 71.0, 35.6, 35.6, 936.0,
                    source="NVIDIA Ampere GA102 GPU architecture whitepaper, appendix table (RTX 3090)"),
        Accelerator("RTX4090-24GB", 24564 * MIB, 165.2, 165.2, 82.6, 82.6, 1008.0,
                    source="NVIDIA Ada GPU architecture whitepaper, appendix table (RTX 4090)"),
        Accelerator("RTX5090-32GB", 32607 * MIB, 209.5, 209.5, 104.8, 104.8, 1792.0,
                    source="NVIDIA RTX Blackwell GPU architecture whitepaper, appendix table (RTX 5090)"),
        # Professional / data-centre Ampere, Ada: full-rate FP32 accumulate
        Accelerator("A10-24GB", 23028 * MIB, 125.0, 125.0, 31.2, 62.5, 600.0,
                    source="NVIDIA A10 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/products/a10-gpu)"),
        Accelerator("A6000-48GB", 49140 * MIB, 154.8, 154.8, 38.7, 77.4, 768.0,
                    source="NVIDIA RTX A6000 datasheet (nvidia.com/en-us/design-visualization/rtx-a6000)"),
        Accelerator("L4-24GB", 23034 * MIB, 121.0, 121.0, 30.3, 60.0, 300.0,
                    source="NVIDIA L4 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/l4)"),
        Accelerator("L40S-48GB", 46068 * MIB, 362.05, 362.05, 91.6, 183.0, 864.0,
                    source="NVIDIA L40S GPU datasheet (nvidia.com/en-us/data-center/l40s)"),
        Accelerator("A100-40GB", 40960 * MIB, 312.0, 312.0, 19.5, 156.0, 1555.0,
                    source="NVIDIA A100 Tensor Core GPU datasheet, SXM4 40GB (nvidia.com/en-us/data-center/a100)"),
        Accelerator("A100-80GB", 81920 * MIB, 312.0, 312.0, 19.5, 156.0, 2039.0,
                    source="NVIDIA A100 Tensor Core GPU datasheet, SXM4 80GB (nvidia.com/en-us/data-center/a100)"),
        # Hopper: the data sheet's tensor figures are sparse; dense is half
        Accelerator("H100-PCIe-80GB", 81559 * MIB, 756.0, 756.0, 51.0, 378.0, 2000.0,
                    source="NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe (nvidia.com/en-us/data-center/h100)"),
        Accelerator("H100-SXM-80GB", 81559 * MIB, 989.4, 989.4, 67.0, 494.7, 3350.0,
                    source="NVIDIA H100 Tensor Core GPU datasheet, H100 SXM (nvidia.com/en-us/data-center/h100)"),
        Accelerator("H200-141GB", 143771 * MIB, 989.4, 989.4, 67.0, 494.7, 4800.0,
                    source="NVIDIA H200 Tensor Core GPU datasheet, H200 SXM (nvidia.com/en-us/data-center/h200)"),
    ]
}

# What a CUDA process holds beyond its tensors: the context and library workspaces (not in the caching allocator),
# and the allocator's block rounding and fragmentation, taken as a fraction of the tensor peak.
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
ALLOCATOR_OVERHEAD = 0.08

CUSTOM_KEYS = ("mem_gb", "tflops", "bw_gbs", "fp32_tflops")
CUSTOM_HELP = "custom:mem_gb=24,tflops=71,bw_gbs=936[,fp32_tflops=35.6]"


def cpu_accelerator(memory_gib: float, tflops: float | None = None) -> Accelerator:
    """A CPU host as a target: ``cpu:64`` means 64 GiB; throughput is measured if not given."""
    rate = tflops or 0.0
    return Accelerator(f"CPU-{memory_gib:g}GB", int(memory_gib * GIB), rate, rate, rate, rate, cuda=False)


def custom_accelerator(spec: str) -> Accelerator:
    """``custom:mem_gb=24,tflops=71,bw_gbs=936``: memory in GiB, dense fp16/bf16 tensor TFLOP/s (FP32 accumulate),
    bandwidth in GB/s; ``fp32_tflops`` defaults to half ``tflops`` (the TF32/FP16 ratio of every tensor-core card
    since Ampere)."""
    values: dict[str, float] = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in CUSTOM_KEYS:
            raise ValueError(f"bad custom accelerator item {item!r}; write {CUSTOM_HELP}")
        try:
            values[key] = float(value)
        except ValueError:
            raise ValueError(f"bad number in custom accelerator item {item!r}") from None
        if values[key] <= 0:
            raise ValueError(f"custom accelerator {key} must be positive, got {value}")
    missing = [k for k in CUSTOM_KEYS[:3] if k not in values]
    if missing:
        raise ValueError(f"custom accelerator lacks {', '.join(missing)}; write {CUSTOM_HELP}")
    tflops = values["tflops"]
    fp32 = values.get("fp32_tflops", tflops / 2)
    return Accelerator(f"custom-{values['mem_gb']:g}GB", int(values["mem_gb"] * GIB), tflops, tflops, fp32, fp32,
                       values["bw_gbs"], source="given on the command line")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_accelerator(name: str) -> Accelerator:
    """Look a card up by name, ignoring case, spaces, dashes and the memory suffix (``rtx 3090``, ``RTX3090``,
    ``a100-80gb``); a name that fits several cards (``A100``) is refused with the list of them."""
    low = name.strip().lower()
    if low.startswith("cpu"):
        _, _, size = low.partition(":")
        try:
            return cpu_accelerator(float(size) if size else 16.0)
        except ValueError:
            raise ValueError(f"bad CPU target {name!r}: write cpu:<GiB>, e.g. cpu:64") from None
    if low.startswith("custom:"):
        return custom_accelerator(name.strip()[len("custom:"):])
    key = _normalise(name)
    if not key:
        raise ValueError("empty accelerator name")
    exact = [a for a in ACCELERATORS.values() if key in (_normalise(a.name), _normalise(a.model_name))]
    if len(exact) == 1:
        return exact[0]
    words = [_normalise(w) for w in re.split(r"[\s_-]+", low) if _normalise(w)]
    matches = exact or [a for a in ACCELERATORS.values()
                        if key in _normalise(a.name) or all(w in _normalise(a.name) for w in words)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"accelerator {name!r} is ambiguous: {', '.join(a.name for a in matches)}")
    raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)}, cpu:<GiB> or {CUSTOM_HELP}")


VENDOR_WORDS = ("nvidia", "geforce", "tesla", "quadro")


def accelerator_for_device(device_name: str, memory_bytes: int | None = None) -> Accelerator | None:
    """The table's card for a CUDA device name (``torch.cuda.get_device_name``, e.g. ``NVIDIA H200``,
    ``NVIDIA A100-SXM4-80GB``): the longest chip name it contains, then the nearest memory size; None if unknown."""
    name = _normalise(device_name)
    for word in VENDOR_WORDS:
        name = name.replace(word, "")

    def chip(a: Accelerator) -> str:
        return _normalise(a.model_name.split("-")[0])

    candidates = [a for a in ACCELERATORS.values() if chip(a) in name]
    if not candidates:
        return None
    longest = max(len(chip(a)) for a in candidates)
    candidates = [a for a in candidates if len(chip(a)) == longest]
    variant = [a for a in candidates if _normalise(a.model_name) in name]
    candidates = variant or candidates
    if memory_bytes is None:
        return candidates[0]
    return min(candidates, key=lambda a: (abs(a.memory_bytes - memory_bytes), -a.bandwidth_gbs))


def overhead_bytes(acc: Accelerator, peak: int) -> int:
    """Memory beyond the tensors: context + allocator on CUDA, nothing counted on a CPU host."""
    return CUDA_CONTEXT_BYTES + int(ALLOCATOR_OVERHEAD * peak) if acc.cuda else 0

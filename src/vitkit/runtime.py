"""Where a computation runs and in what number format: precision names, dtypes, autocast, devices, unwrapping, and
the machine description recorded beside every figure.

Everything above ``vitkit.utils`` that asks "which dtype is bf16", "is there a GPU" or "what is inside this DDP
wrapper" asks here, so the answer is written once.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn

#: precision names a user may write; "auto" resolves per device (resolve_precision)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: the dtype each concrete precision computes in
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name ('fp32', 'bf16', 'fp16'); int8 paths compute their float parts in fp32."""
    if precision == "int8":
        return torch.float32
    try:
        return PRECISION_DTYPES[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISION_DTYPES)}") from None


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the fastest autocast precision this device runs natively; any other value is returned as is."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and native_cpu_bf16() else "fp32"


def amp_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """torch.amp autocast for 'bf16' / 'fp16' (matmuls in low precision, softmax and norms in fp32); nothing for
    'fp32' and 'int8' (whose quantized layers choose their own arithmetic)."""
    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.autocast(device_type, dtype=precision_dtype(precision))


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """'auto' / None -> CUDA (this process's GPU under torchrun) when present, else the CPU; anything else must exist
    on this machine, or the error says which device is missing."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available on this machine; use cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile / DDP wrappers, whose parameter names the model's own helpers know."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# --- the machine -----------------------------------------------------------------------------------------------------

def _cpuinfo_value(key: str) -> str | None:
    """The value of the first ``key`` line of /proc/cpuinfo (None where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_value("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return set((_cpuinfo_value("flags") or "").split())


def native_cpu_bf16() -> bool:
    """Whether this CPU has a bf16 dot-product instruction (AVX512_BF16 or AMX), so bf16 autocast can beat fp32.

    torch.backends.cpu.get_cpu_capability() says only "AVX512" on such CPUs (Zen 4/5), so it cannot tell; without
    these flags bf16 GEMMs run through conversions and are many times slower than fp32.
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions from package metadata (no import: importing transformers alone takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def machine_info() -> dict[str, Any]:
    """The machine and software a figure came from: recorded beside every benchmark result and run."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": native_cpu_bf16(),
        "cpu_vector_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx"))),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    info.update(_package_versions(("torchvision", "timm", "transformers", "onnxruntime", "torchao")))
    return info


__all__ = [
    "PRECISIONS", "PRECISION_DTYPES", "precision_dtype", "resolve_precision", "amp_context", "resolve_device",
    "unwrap_model", "cpu_model", "cpu_flags", "native_cpu_bf16", "machine_info",
]

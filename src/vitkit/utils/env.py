"""What machine and software a figure came from, recorded beside every benchmark result."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime


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


def describe_environment() -> dict:
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": native_cpu_bf16(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    for name in ("torchvision", "timm", "transformers", "onnxruntime"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            pass
    return info

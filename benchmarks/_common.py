"""Helpers shared by the benchmark scripts: what machine a figure was measured on, and how loaded it was.

Scripts run as ``python benchmarks/<name>.py``, so this module is importable as ``_common`` (the script's folder is
first on sys.path).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The vector-extension flags that decide CPU kernel speed (AVX2 vs AVX512 / AMX, bf16 support)."""
    try:
        return sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("avx", "amx"))})
    except OSError:
        return []


def load() -> list[float]:
    """1/5/15-minute load averages: above the core count, other processes shared the CPU during the figure."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "cpu_flags": cpu_flags(),
            "platform": platform.platform(), "python": platform.python_version()}

"""Helpers shared by the benchmark scripts: how loaded the machine was (what it is: vitkit.runtime.machine_info).

Scripts run as ``python benchmarks/<name>.py``, so this module is importable as ``_common`` (the script's folder is
first on sys.path).
"""

from __future__ import annotations

import os


def load() -> list[float]:
    """1/5/15-minute load averages: above the core count, other processes shared the CPU during the figure."""
    return [round(x, 2) for x in os.getloadavg()]

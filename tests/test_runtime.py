"""Precision resolution: 'auto' picks the machine's native precision."""

from __future__ import annotations

import torch


def test_auto_precision_picks_the_native_one(monkeypatch):
    from vitkit import runtime
    from vitkit.runtime import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"

"""`vitkit bench`: every backend measured side by side, with its distance from eager fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.infer import tiny_model
from vitkit.infer.bench import percentile, run_bench, time_calls


def test_percentile_matches_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_time_calls_counts_reps_after_warmup():
    calls = []
    times = time_calls(lambda x: calls.append(1), torch.zeros(1), warmup=2, reps=3)
    assert len(times) == 3 and len(calls) == 5 and all(t >= 0 for t in times)


def test_run_bench_cpu_backends():
    result = run_bench(
        tiny_model(), backends=["eager_fp32", "eager_bf16", "onnx_fp32", "onnx_int8", "torch_int8"], batch_size=4,
        warmup=1, reps=2, latency_reps=3, log=None,
    )
    b = result["backends"]
    assert set(b) == {"eager_fp32", "eager_bf16", "onnx_fp32", "onnx_int8", "torch_int8"}
    for name, entry in b.items():
        assert "error" not in entry, (name, entry)
        assert entry["latency_ms_p95"] >= entry["latency_ms_p50"] > 0 and entry["throughput_img_s"] > 0
    assert b["eager_fp32"]["max_abs_diff_vs_fp32"] == 0
    assert b["onnx_fp32"]["max_abs_diff_vs_fp32"] < 1e-4
    assert 0 < b["torch_int8"]["max_abs_diff_vs_fp32"] < 0.5
    assert result["machine"]["cores"] >= 1 and len(result["machine"]["load_average"]) == 3
    with pytest.raises(ValueError, match="unknown backends"):
        run_bench(tiny_model(), backends=["tensorrt"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_run_bench_cuda_uses_events_and_skips_cpu_only_backends():
    result = run_bench(tiny_model(), backends=["eager_fp32", "eager_bf16", "torch_int8"], batch_size=4, reps=2,
                       latency_reps=3, device="cuda", log=None)
    assert result["backends"]["torch_int8"]["skipped"].startswith("PyTorch dynamic INT8")
    assert result["backends"]["eager_bf16"]["throughput_img_s"] > 0


def test_compiled_backends_match_eager_and_bf16_is_opt_in():
    """compile_fp32 equals eager within float tolerance; compile_bf16 stays close to it. Neither compile_bf16 nor
    compile_int8 is in the default set (a second compilation, worth it only where bf16 is native; torchao is an
    extra); compile_int8's runner is compiled and checked in tests/infer/test_quantize.py."""
    from vitkit.infer.bench import DEFAULT_BACKENDS

    assert "compile_bf16" not in DEFAULT_BACKENDS and "compile_fp32" in DEFAULT_BACKENDS
    assert "compile_int8" not in DEFAULT_BACKENDS  # torchao is an extra
    try:
        result = run_bench(tiny_model(), backends=["eager_fp32", "compile_fp32", "compile_bf16"],
                           batch_size=2, warmup=1, reps=1, latency_reps=1, log=None)
    finally:
        torch._dynamo.reset()  # leave no compiled variants behind to count against later tests' recompile limit
    b = result["backends"]
    assert "error" not in b["compile_bf16"], b["compile_bf16"]
    assert b["compile_fp32"]["max_abs_diff_vs_fp32"] < 1e-4
    assert 0 < b["compile_bf16"]["max_abs_diff_vs_fp32"] < 0.5

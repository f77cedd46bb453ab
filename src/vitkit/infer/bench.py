"""Side-by-side inference speed of one model through every runtime vitkit can deploy it with.

Latency at batch 1 (p50/p95 over many calls) and throughput at a chosen batch (median over repetitions), after
warm-up, for eager fp32/bf16, torch.compile, ONNX Runtime fp32/INT8, PyTorch INT8 eager (torch.ao) and compiled
(torchao). On CUDA the clock is a pair of CUDA events around each call; on the CPU, perf_counter. Each backend also
reports how far its logits are from eager fp32 on the timed batch, so a fast but wrong path shows itself in the
same table.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime import amp_context, machine_info, resolve_device

BACKENDS = ("eager_fp32", "eager_bf16", "compile_fp32", "compile_bf16", "onnx_fp32", "onnx_int8", "onnx_int8_static",
            "torch_int8", "compile_int8")
# what `vitkit bench` runs when not told: compile_bf16 is opt-in (a second compilation, and only worth it where the
# device computes bf16 natively: CUDA, or a CPU with avx512_bf16 / AMX), and so is compile_int8 (torchao, an extra)
DEFAULT_BACKENDS = tuple(b for b in BACKENDS if b not in ("compile_bf16", "compile_int8"))
Runner = Callable[[torch.Tensor], torch.Tensor]


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (e.g. INT8 kernels on CUDA); recorded as skipped, not as a failure."""


def build_runner(
    name: str, model: nn.Module, device: torch.device, workdir: Path, example: torch.Tensor,
    calibration: list[torch.Tensor] | None = None, calibration_method: str = "minmax",
) -> Runner:
    """A callable (float batch on ``device``) -> logits for backend ``name``; builds/exports what it needs.

    ``onnx_int8_static`` needs ``calibration``: batches of real, preprocessed images (random noise would calibrate
    the activation ranges to the wrong distribution, so it is skipped rather than faked)."""
    if name in ("eager_fp32", "eager_bf16", "compile_fp32", "compile_bf16"):
        mode, precision = name.split("_")
        # freezing: inductor folds the weights into the graph as constants and prepacks them for oneDNN, whose GEMMs
        # then take bias and GELU as fused post-ops (the gain is in docs/inference.md); the
        # model must not change after the first call, which holds for a deployed model
        forward = torch.compile(model, options={"freezing": True}) if mode == "compile" else model

        @torch.inference_mode()
        def run(x: torch.Tensor) -> torch.Tensor:
            with amp_context(device, precision):  # compile traces under autocast: the casts join the graph
                return forward(x)

        return run
    if name == "torch_int8":
        if device.type != "cpu":
            raise BackendUnavailable("PyTorch dynamic INT8 kernels run on the CPU only")
        from .quantize import quantize_dynamic_int8

        return torch.inference_mode()(quantize_dynamic_int8(model))
    if name == "compile_int8":
        if device.type != "cpu":
            raise BackendUnavailable("vitkit runs torchao INT8 on the CPU only")
        from .quantize import quantize_torchao_int8

        try:
            quantized = quantize_torchao_int8(model)
        except ImportError as err:
            raise BackendUnavailable(str(err)) from err
        return torch.inference_mode()(torch.compile(quantized))
    if name in ("onnx_fp32", "onnx_int8", "onnx_int8_static"):
        from .export import OnnxModel, export_model
        from .quantize import quantize_onnx_int8, quantize_onnx_static_int8

        if name == "onnx_int8_static" and not calibration:
            raise BackendUnavailable("static INT8 needs calibration images (real, preprocessed); none were given")

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("this onnxruntime build has no CUDAExecutionProvider")
            if name != "onnx_fp32":
                raise BackendUnavailable("vitkit runs ONNX Runtime INT8 on the CPU provider only")
            providers = ["CUDAExecutionProvider"]
        path = workdir / "model.onnx"
        if not path.exists():
            export_model(model.cpu(), "onnx", path)
            model.to(device)
        if name == "onnx_int8":
            path = quantize_onnx_int8(path, workdir / "model.int8.onnx")
        elif name == "onnx_int8_static":
            path = quantize_onnx_static_int8(path, workdir / "model.int8s.onnx", calibration, calibration_method)
        runner = OnnxModel(path, providers=providers)
        return lambda x: runner(x).to(device)
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


def time_calls(fn: Runner, x: torch.Tensor, warmup: int, reps: int) -> list[float]:
    """Seconds per call of ``fn(x)``: CUDA events on a CUDA tensor (asynchronous launches), else perf_counter."""
    for _ in range(warmup):
        fn(x)
    times = []
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            torch.cuda.synchronize(x.device)
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return times


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def run_bench(
    model: nn.Module,
    backends: tuple[str, ...] | list[str] = DEFAULT_BACKENDS,
    batch_size: int = 32,
    warmup: int = 2,
    reps: int = 5,
    latency_reps: int = 20,
    device: str | torch.device | None = "cpu",
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    calibration: list[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Benchmark ``model`` through each backend; returns a JSON-able dict (see :func:`format_bench_table`).
    ``calibration`` (real preprocessed image batches) enables ``onnx_int8_static``."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; expected some of {BACKENDS}")
    if batch_size < 1 or reps < 1 or latency_reps < 1 or warmup < 0:
        raise ValueError("batch_size, reps and latency_reps must be >= 1 and warmup >= 0")
    device = resolve_device(device)
    model = model.eval().to(device)
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(1, cfg["in_chans"], *cfg["img_size"], generator=g).to(device)
    xb = torch.randn(batch_size, cfg["in_chans"], *cfg["img_size"], generator=g).to(device)
    with torch.inference_mode():
        reference = model(xb).float().cpu()
    result: dict[str, Any] = {
        "model": model.model_name or type(model).__name__, "img_size": list(cfg["img_size"]),
        "device": str(device), "batch_size": batch_size, "warmup": warmup, "reps": reps, "latency_reps": latency_reps,
        "machine": machine_info(), "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="vitkit-bench-") as workdir:
        for name in backends:
            entry: dict[str, Any] = {}
            t0 = time.perf_counter()
            try:
                fn = build_runner(name, model, device, Path(workdir), xb, calibration)
                fn(x1)  # first call: compilation / session warm-up counted as setup, not as latency
                fn(xb)
                entry["setup_s"] = round(time.perf_counter() - t0, 2)
                lat = time_calls(fn, x1, warmup, latency_reps)
                thr = time_calls(fn, xb, warmup, reps)
                with torch.inference_mode():
                    out = fn(xb).float().cpu()
            except BackendUnavailable as err:
                entry["skipped"] = str(err)
            except Exception as err:  # a backend that breaks here is a result to report, not a crash of the table
                entry["error"] = f"{type(err).__name__}: {err}"
            else:
                entry.update(
                    latency_ms_p50=round(1e3 * percentile(lat, 50), 3),
                    latency_ms_p95=round(1e3 * percentile(lat, 95), 3),
                    throughput_img_s=round(batch_size / statistics.median(thr), 2),
                    batch_s_median=round(statistics.median(thr), 4),
                    max_abs_diff_vs_fp32=round(float((out - reference).abs().max()), 6),
                    top1_agreement_vs_fp32=float((out.argmax(-1) == reference.argmax(-1)).float().mean()),
                )
            result["backends"][name] = entry
            if log:
                log(_row(name, entry))
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def _row(name: str, e: dict[str, Any]) -> str:
    if "latency_ms_p50" not in e:
        return f"{name:14s} {'skipped: ' + e['skipped'] if 'skipped' in e else 'error: ' + e['error']}"
    return (
        f"{name:14s} {e['latency_ms_p50']:10.2f} {e['latency_ms_p95']:10.2f} {e['throughput_img_s']:12.2f} "
        f"{e['max_abs_diff_vs_fp32']:12.2e} {e['setup_s']:8.1f}"
    )


def format_bench_table(result: dict[str, Any]) -> str:
    head = (
        f"{result['model']} {result['img_size'][0]}x{result['img_size'][1]} on {result['device']} "
        f"({result['machine']['cpu']}, load {result['machine']['load_average'][0]:.1f})\n"
        f"{'backend':14s} {'p50 ms b1':>10s} {'p95 ms b1':>10s} {'img/s b' + str(result['batch_size']):>12s} "
        f"{'|d| vs fp32':>12s} {'setup s':>8s}"
    )
    return "\n".join([head] + [_row(n, e) for n, e in result["backends"].items()])


__all__ = ["BACKENDS", "DEFAULT_BACKENDS", "BackendUnavailable", "build_runner", "format_bench_table", "percentile",
           "run_bench", "time_calls"]

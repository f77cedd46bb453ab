"""The first run of vitkit on a GPU: what the planner predicts against what the card does, in one script.

    python benchmarks/gpu_check.py              # one NVIDIA GPU, at most ~8 minutes
    python benchmarks/gpu_check.py --dry-run    # the same code on the CPU with tiny shapes
                                                # (tests/benchmarks/test_gpu_check.py)

Sections, each recorded even if another fails, the JSON rewritten after each one
(benchmarks/results/gpu_check_<device>.json):
1. device: the card, its memory, the software versions;
2. train_steps: for vit_tiny/small/base_patch16_224 at 224 px, a training step (AdamW, cross-entropy) in bf16 and
   fp16 autocast, vitkit's model and timm's under the same loop: img/s and ``torch.cuda.max_memory_allocated``;
3. sdpa_backend: which scaled-dot-product-attention kernel each of those steps ran (flash expected on CUDA);
4. plan_measure: ``vitkit plan --measure`` for each model: predicted vs measured peak memory and step time;
5. cifar10: ``recipes/cifar10-gpu.yaml`` under a 2-minute training budget: test accuracy and img/s;
6. inference: forward throughput, eager fp32 vs eager bf16 vs torch.compile bf16.
A section that would overrun ``--max-minutes`` is skipped and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import vitkit
from vitkit.runtime import amp_context, machine_info
from vitkit.utils.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")
SDPA_OPS = {  # aten op -> backend name
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_attention_math": "math",
}


@dataclass(frozen=True)
class Settings:
    """What a run measures: the GPU run's shapes, or the dry run's tiny ones through the same code."""

    device: str
    models: tuple[str, ...]
    img_size: int
    depth: int | None  # None: the models' own; the dry run builds one-block models
    plan_model: str | None  # None: each of ``models`` at ``img_size``; else this one at its own size
    plan_precision: str
    train_batch: int
    infer_batch: int
    warmup: int
    steps: int
    cifar_overrides: tuple[str, ...]
    compile_backend: str
    max_minutes: float


def gpu_settings(args: argparse.Namespace, out_dir: Path) -> Settings:
    data = args.cifar_data or next((p for p in (ROOT.parent / "shared/data/cifar10", ROOT / "shared/data/cifar10")
                                    if p.is_dir()), None)
    cifar = () if data is None else (f"data.name={data}", f"train.time_budget_s={args.cifar_seconds}",
                                     f"checkpoint.out_dir={out_dir}")
    return Settings("cuda", MODELS, 224, None, None, "bf16", 128, 256, 3, 10, cifar, "inductor", args.max_minutes)


def dry_settings(args: argparse.Namespace, out_dir: Path) -> Settings:
    cifar = ("data.name=digits", "data.img_size=32", "data.batch_size=64", "data.eval_batch_size=128",
             "data.crop_padding=0", "data.flip=false", "train.compile=false", "train.device=cpu",
             "train.precision=fp32", "train.epochs=1", "train.eval_every=1", "train.threads=null",
             "train.ema=false", "train.max_steps=2", "train.time_budget_s=20", "model.kwargs={depth: 1}",
             f"checkpoint.out_dir={out_dir}")
    return Settings("cpu", MODELS[:1], 32, 1, "vit_digits_patch2_8", "fp32", 2, 4, 1, 2, cifar, "eager",
                    args.max_minutes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def build(impl: str, name: str, img_size: int, depth: int | None) -> torch.nn.Module:
    extra = {} if depth is None else {"depth": depth}
    if impl == "timm":
        import timm

        return timm.create_model(name, pretrained=False, img_size=img_size, **extra)
    return vitkit.create_model(name, img_size=img_size, **extra)


def sdpa_backend(fn) -> str:
    """The attention kernel ``fn`` runs, from the profiler's op names ("explicit" when none of SDPA's ran)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    seen = {SDPA_OPS[e.key] for e in prof.key_averages() if e.key in SDPA_OPS}
    return ", ".join(sorted(seen)) or "explicit (matmul + softmax)"


def train_step_run(model: torch.nn.Module, batch: int, img_size: int, precision: str, device: torch.device,
                   warmup: int, steps: int) -> dict:
    """img/s and peak memory of AdamW training steps on random data (the same loop for vitkit's and timm's model)."""
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with amp_context(device, precision):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    backend = sdpa_backend(step)
    _sync(device)
    _peak_reset(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    return {"img_per_s": batch / seconds, "step_s": seconds, "max_memory_allocated": _peak(device),
            "sdpa_backend": backend}


def section_train(s: Settings, device: torch.device) -> dict:
    rows = []
    for name in s.models:
        for precision in ("bf16", "fp16"):
            for impl in ("vitkit", "timm"):
                torch.manual_seed(0)
                model = build(impl, name, s.img_size, s.depth)
                r = train_step_run(model, s.train_batch, s.img_size, precision, device, s.warmup, s.steps)
                rows.append({"model": name, "impl": impl, "precision": precision, "batch": s.train_batch, **r})
                del model
    for r in rows:  # vitkit / timm for the same model and precision
        twin = next(t for t in rows if t["impl"] != r["impl"] and t["model"] == r["model"]
                    and t["precision"] == r["precision"])
        r["speed_vs_other"] = r["img_per_s"] / twin["img_per_s"]
    return {"rows": rows, "backends": sorted({r["sdpa_backend"] for r in rows})}


def section_plan(s: Settings, device: torch.device) -> dict:
    """``vitkit plan --measure --json`` as a user runs it, on this device."""
    from vitkit.cli import main as cli_main

    rows = []
    for name in [s.plan_model] if s.plan_model else s.models:
        size = [] if s.plan_model else ["--img-size", str(s.img_size)]
        argv = ["plan", name, *size, "--batch", str(s.train_batch), "--precision", s.plan_precision, "--measure",
                "--device", device.type, "--json"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli_main(argv)
        if rc:
            rows.append({"model": name, "argv": argv, "exit_status": rc})
            continue
        out = json.loads(buf.getvalue())
        m = out["measured"]
        rows.append({"model": name, "argv": argv, "predicted_peak_bytes": out["memory"]["peak"],
                     "measured_peak_bytes": m["peak_bytes"], "memory_error": m["memory_error"],
                     "flops_error": m["flops_error"], "measured_step_s": m["step_seconds"],
                     "predicted_step_s": m.get("predicted_step_seconds"), "step_time_error": m.get("step_time_error"),
                     "predicted_on": m.get("predicted_on"), "predicted_bound": m.get("predicted_bound")})
    return {"rows": rows}


def section_cifar(s: Settings) -> dict:
    """The recipe under a training-time budget, through vitkit's own training entry point."""
    from vitkit.train.config import load_config
    from vitkit.train.engine import train

    if not s.cifar_overrides:
        return {"skipped": "CIFAR-10 data not found (pass --cifar-data)"}
    cfg = load_config(ROOT / "recipes" / "cifar10-gpu.yaml", list(s.cifar_overrides))
    summary = train(cfg)
    keep = ("test_acc1", "test_ema_acc1", "train_img_per_s", "train_images", "wall_time_s", "epochs_completed")
    return {"recipe": "recipes/cifar10-gpu.yaml", "overrides": list(s.cifar_overrides),
            **{k: summary.get(k) for k in keep if k in summary}}


def section_inference(s: Settings, device: torch.device) -> dict:
    rows = []
    for name in s.models:
        model = build("vitkit", name, s.img_size, s.depth).to(device).eval()
        x = torch.randn(s.infer_batch, 3, s.img_size, s.img_size, device=device)
        variants = [("eager fp32", model, "fp32"), ("eager bf16", model, "bf16"),
                    ("compile bf16", torch.compile(model, backend=s.compile_backend), "bf16")]
        for label, fn, precision in variants:
            with torch.inference_mode(), amp_context(device, precision):
                t_first = time.perf_counter()
                for _ in range(s.warmup):
                    fn(x)
                _sync(device)
                warm_s = time.perf_counter() - t_first
                t0 = time.perf_counter()
                for _ in range(s.steps):
                    fn(x)
                _sync(device)
                seconds = (time.perf_counter() - t0) / s.steps
            rows.append({"model": name, "variant": label, "batch": s.infer_batch, "img_per_s": s.infer_batch / seconds,
                         "warmup_s": warm_s})
        del model
    return {"rows": rows}


def device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu_dry_run"
    return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(device).lower()).strip("_")


def device_info(device: torch.device) -> dict:
    info: dict[str, Any] = {"device": str(device), "machine": machine_info()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"name": props.name, "total_memory": props.total_memory, "capability": f"{props.major}.{props.minor}",
                 "multiprocessors": props.multi_processor_count, "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version()}
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="the same code on the CPU with tiny shapes")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/gpu_check_<device>.json)")
    ap.add_argument("--cifar-data", type=Path, default=None, help="CIFAR-10 ImageFolder root (train/, test/)")
    ap.add_argument("--cifar-seconds", type=float, default=120.0, help="training budget of the CIFAR-10 run")
    ap.add_argument("--max-minutes", type=float, default=8.0, help="skip the sections that would overrun this")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        s = dry_settings(args, Path(tmp)) if args.dry_run else gpu_settings(args, Path(tmp))
        device = torch.device(s.device)
        out = args.out or ROOT / "benchmarks" / "results" / f"gpu_check_{device_name(device)}.json"
        result: dict[str, Any] = {"what": "vitkit's first GPU check (benchmarks/gpu_check.py)",
                                  "dry_run": args.dry_run, "settings": s.__dict__, "sections": {},
                                  "command": "python benchmarks/gpu_check.py" + (" --dry-run" if args.dry_run else "")}
        t_start = time.perf_counter()
        # (name, function, minutes it may take on the GPU: skipped when fewer are left)
        sections = [("device", lambda: device_info(device), 0.0), ("train_steps", lambda: section_train(s, device), 1.0),
                    ("plan_measure", lambda: section_plan(s, device), 0.5),
                    ("cifar10", lambda: section_cifar(s), 1.5 + args.cifar_seconds / 60),  # + caching, compiling
                    ("inference", lambda: section_inference(s, device), 1.5)]
        for name, fn, minutes in sections:
            left = s.max_minutes - (time.perf_counter() - t_start) / 60
            if not args.dry_run and minutes > left:
                result["sections"][name] = {"skipped": f"{left:.1f} min left, needs ~{minutes:.1f}"}
                continue
            t0 = time.perf_counter()
            try:
                result["sections"][name] = fn()
            except Exception as err:  # keep the other sections' figures; the error says what broke
                result["sections"][name] = {"error": f"{type(err).__name__}: {err}",
                                            "traceback": traceback.format_exc(limit=6)}
            result["sections"][name]["seconds"] = time.perf_counter() - t0
            if name == "train_steps" and "rows" in result["sections"][name]:
                result["sdpa_backend"] = result["sections"][name]["backends"]
            result["wall_s"] = time.perf_counter() - t_start
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, json.dumps(result, indent=2, default=str) + "\n")
            print(f"[{result['wall_s']:6.1f} s] {name}: "
                  f"{'error: ' + result['sections'][name]['error'] if 'error' in result['sections'][name] else 'done'}",
                  flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

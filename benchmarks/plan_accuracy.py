"""Planner vs measurement over a grid: ViT-Ti/S/B x 224/384 x batch 8/32 x fp32/bf16 x checkpointing x train/infer.

    python benchmarks/plan_accuracy.py                 # the full grid on this machine's CPU (or --device cuda)
    python benchmarks/plan_accuracy.py --models vit_tiny_patch16_224 --sizes 224 --batches 8   # a corner of it

Memory is measured as the peak of live tensor storage in a steady-state step (MemTracker on CPU,
max_memory_allocated on CUDA); FLOPs by torch.utils.flop_counter on that step. A point runs for real when its step
fits --real-budget (TFLOP, counting a bf16 step on a CPU without AVX-512 BF16 as 50x dearer), otherwise under
FakeTensorMode (same dispatch, no arithmetic; see vitkit/plan/measure.py); points run for real are also run fake, and
the agreement of the two methods is recorded. Results are written after every point to
benchmarks/results/plan_accuracy.json (or --out), so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time
from pathlib import Path

import torch

import vitkit
from vitkit.plan.flops import ViTShape, vit_flops
from vitkit.plan.measure import measure_step
from vitkit.plan.memory import estimate_memory
from vitkit.plan.planner import runs_fused_attention
from vitkit.runtime import machine_info
from vitkit.utils.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def grid(models, sizes, batches):
    for model, size, batch, precision in itertools.product(models, sizes, batches, ("fp32", "bf16")):
        yield model, size, batch, "infer", precision, False
        for ckpt in (False, True):
            yield model, size, batch, "train", precision, ckpt


def summarize(rows: list[dict], device: str, env: dict) -> dict:
    return {
        "device": device,
        "points": len(rows),
        "max_memory_error": max(abs(r["memory_error"]) for r in rows),
        "max_flops_error": max(abs(r["flops_error"]) for r in rows),
        "real_points": sum(r["execute"] == "real" for r in rows),
        "max_fake_real_disagreement_bytes": max((abs(r["fake_minus_real_bytes"]) for r in rows
                                                 if r["fake_minus_real_bytes"] is not None), default=None),
        "goal": {"memory": 0.10, "flops": 0.02},
        "grid": rows,
        "environment": env,
    }


def merge(parts: list[str], out: str) -> int:
    loaded = [json.loads(Path(p).read_text()) for p in parts]
    rows = [r for part in loaded for r in part["grid"]]
    result = summarize(rows, loaded[0]["device"], loaded[0]["environment"])
    result["merged_from"] = parts
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"{len(rows)} points: worst memory error {100 * result['max_memory_error']:.2f}%, worst FLOPs error "
          f"{100 * result['max_flops_error']:.2f}%, {result['real_points']} run for real -> {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[224, 384])
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "plan_accuracy.json"))
    ap.add_argument("--execute", choices=("auto", "real", "fake"), default="auto")
    ap.add_argument("--real-budget", type=float, default=0.6, help="TFLOP per step up to which a point runs for real")
    ap.add_argument("--merge", nargs="+", metavar="PART.json",
                    help="combine the JSON of runs over parts of the grid (e.g. one per model) into --out")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out)

    points = sorted(grid(args.models, args.sizes, args.batches),
                    key=lambda p: (p[1] * p[1] * p[2] * (3 if p[3] == "train" else 1), p))  # cheapest first
    rows = []
    env = machine_info()
    for model_name, size, batch, mode, precision, ckpt in points:
        torch.manual_seed(0)
        with torch.device("meta"):
            shape_model = vitkit.create_model(model_name, img_size=size)
        shape = ViTShape.from_config(shape_model.config)
        # as vitkit runs it on this device: explicit (N x N) attention for bf16 on a CPU, fused kernels otherwise
        fused = runs_fused_attention(torch.device(args.device).type, precision)
        est = estimate_memory(shape, batch, mode, precision, "adamw", ckpt, fused,
                              num_params=sum(p.numel() for p in shape_model.parameters()))
        predicted_flops = vit_flops(shape, mode, ckpt, fused)["total"] * batch
        slow_bf16 = precision != "fp32" and args.device == "cpu" and "AVX512" not in torch.backends.cpu.get_cpu_capability()
        cost = predicted_flops / 1e12 * (50 if slow_bf16 else 1)
        execute = args.execute if args.execute != "auto" else ("real" if cost <= args.real_budget else "fake")
        model = vitkit.create_model(model_name, img_size=size) if execute == "real" else shape_model
        t0 = time.perf_counter()
        meas = measure_step(model, batch, mode, precision, "adamw", ckpt, device=args.device, execute=execute)
        agreement = None
        if execute == "real" and args.device == "cpu":
            with torch.device("meta"):
                twin = vitkit.create_model(model_name, img_size=size)
            fake = measure_step(twin, batch, mode, precision, "adamw", ckpt, device="cpu", execute="fake")
            agreement = fake.peak_bytes - meas.peak_bytes
        row = {
            "model": model_name, "img_size": size, "batch": batch, "mode": mode, "precision": precision,
            "grad_checkpointing": ckpt, "fused_attention": fused,
            "predicted_peak_bytes": est.peak, "measured_peak_bytes": meas.peak_bytes,
            "memory_error": (est.peak - meas.peak_bytes) / meas.peak_bytes,
            "predicted_flops": predicted_flops, "measured_flops": meas.flops,
            "flops_error": (predicted_flops - meas.flops) / meas.flops,
            "predicted_phase": est.peak_phase, "measured_breakdown": meas.breakdown, "execute": execute,
            "fake_minus_real_bytes": agreement,
            "step_seconds": meas.step_seconds, "wall_seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(f"{model_name:22s} {size} b{batch:<3d} {mode:5s} {precision} ckpt={int(ckpt)}  mem pred "
              f"{est.peak / 2**20:9.1f} MiB meas {meas.peak_bytes / 2**20:9.1f} MiB ({100 * row['memory_error']:+5.1f}%)"
              f"  GFLOPs pred {predicted_flops / 1e9:9.1f} meas {meas.flops / 1e9:9.1f} ({100 * row['flops_error']:+5.2f}%)"
              f"  [{execute}{'' if agreement is None else f', fake-real {agreement:+d} B'}]",
              flush=True)
        result = summarize(rows, args.device, env)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        del model
        gc.collect()
    print(f"worst memory error {100 * result['max_memory_error']:.2f}%, worst FLOPs error "
          f"{100 * result['max_flops_error']:.2f}% over {len(rows)} points ({result['real_points']} run for real) "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

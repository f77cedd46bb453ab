"""vitkit plan's memory figures next to `accelerate estimate-memory`'s, for ViT-Ti/S/B/L at 224 px.

    python benchmarks/plan_vs_accelerate.py        # prints a markdown table, writes results/plan_vs_accelerate.json

`accelerate estimate-memory timm/<model>` asks the Hugging Face Hub for the model's metadata before it builds it, so
it cannot run offline. This computes the same numbers through accelerate's own functions: the timm model built
without weights under ``accelerate.init_empty_weights``, ``accelerate.utils.calculate_maximum_sizes`` for its size,
and ``accelerate.commands.estimate.estimate_training_usage`` for the "Training using Adam" column (accelerate prints
the largest of its model / gradients / optimizer / step terms).
"""

from __future__ import annotations

import json
from pathlib import Path

import timm
from accelerate import init_empty_weights
from accelerate.commands.estimate import estimate_training_usage
from accelerate.utils import calculate_maximum_sizes

from vitkit.plan.planner import PlanRequest, plan
from vitkit.runtime import machine_info
from vitkit.utils.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
MODELS = [("ViT-Ti/16", "vit_tiny_patch16_224"), ("ViT-S/16", "vit_small_patch16_224"),
          ("ViT-B/16", "vit_base_patch16_224"), ("ViT-L/16", "vit_large_patch16_224")]
BATCH = 64
GIB = 2**30


def main() -> int:
    rows = []
    for label, name in MODELS:
        with init_empty_weights():
            model = timm.create_model(name, pretrained=False)
        total, _ = calculate_maximum_sizes(model)
        acc_fp32 = max(estimate_training_usage(total, "float32").values())
        acc_bf16 = max(estimate_training_usage(total, "bfloat16").values())
        p = plan(PlanRequest(name, batch=BATCH, precision="bf16", optimizer="adamw"), accelerators=["A100-80GB"])
        m = p.memory
        rows.append({
            "model": label, "registry_name": name, "params": p.params,
            "accelerate_model_bytes": total, "accelerate_training_adam_fp32": acc_fp32,
            "accelerate_training_adam_bf16": acc_bf16,
            "vitkit_model_states": m.weights + m.gradients + m.optimizer_states,
            "vitkit_model_states_bf16_copies": m.weights + m.gradients + m.optimizer_states + m.weight_copies,
            "vitkit_training_peak_bf16_batch64": m.peak,
            "vitkit_needs_on_a_gpu_batch64": int(p.accelerators[0].needed_gib * GIB),
        })
    print(f"| model | params (M) | accelerate, Adam fp32 (GiB) | accelerate, Adam bf16 (GiB) | vitkit weights + grads + "
          f"AdamW states (GiB) | vitkit training peak, bf16, batch {BATCH} (GiB) | vitkit needs on a GPU (GiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.1f} | {r['accelerate_training_adam_fp32'] / GIB:.2f} | "
              f"{r['accelerate_training_adam_bf16'] / GIB:.2f} | {r['vitkit_model_states'] / GIB:.2f} | "
              f"{r['vitkit_training_peak_bf16_batch64'] / GIB:.2f} | {r['vitkit_needs_on_a_gpu_batch64'] / GIB:.2f} |")
    out = ROOT / "benchmarks" / "results" / "plan_vs_accelerate.json"
    atomic_write_text(out, json.dumps({"rows": rows, "batch": BATCH, "precision": "bf16 autocast, AdamW (fused)",
                                       "environment": machine_info(),
                                       "command": "python benchmarks/plan_vs_accelerate.py"}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The planner's table for ViT-Ti/S/B/L/H at 224 and 384 (392 for H/14), training with AdamW under bf16 autocast.

    python benchmarks/plan_table.py      # prints a markdown table, writes benchmarks/results/plan_table.json
"""

from __future__ import annotations

import json
from pathlib import Path

from vitkit.plan.planner import PlanRequest, plan
from vitkit.runtime import machine_info
from vitkit.utils.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
MODELS = [("Ti/16", "vit_tiny_patch16"), ("S/16", "vit_small_patch16"), ("B/16", "vit_base_patch16"),
          ("L/16", "vit_large_patch16"), ("H/14", "vit_huge_patch14")]
CARDS = ["RTX3060-12GB", "RTX4090-24GB", "A100-80GB"]


def main() -> int:
    rows = []
    for label, stem in MODELS:
        for res in (224, 392 if stem.endswith("14") else 384):  # 384 is not a multiple of 14
            name = f"{stem}_224"
            base = dict(model=name, img_size=res, batch=64, precision="bf16", optimizer="adamw")
            plain = plan(PlanRequest(**base), accelerators=CARDS)
            ckpt = plan(PlanRequest(**base, grad_checkpointing=True), accelerators=CARDS)
            rows.append({
                "model": f"ViT-{label}", "registry_name": name, "img_size": res, "params_m": plain.params / 1e6,
                "train_gflops_per_image": plain.flops_train_per_image / 1e9,
                "peak_gib_batch64": plain.memory.peak / 2**30,
                "peak_gib_batch64_ckpt": ckpt.memory.peak / 2**30,
                "max_batch": {a.name: a.max_micro_batch for a in plain.accelerators},
                "max_batch_ckpt": {a.name: a.max_micro_batch for a in ckpt.accelerators},
            })
    head = ("| model | res | params (M) | train GFLOPs/img | peak GiB @64 | peak GiB @64 ckpt | "
            + " | ".join(f"max batch {c}" for c in CARDS) + " | " + " | ".join(f"max batch {c} ckpt" for c in CARDS) + " |")
    print(head)
    print("|" + "---|" * (6 + 2 * len(CARDS)))
    for r in rows:
        print(f"| {r['model']} | {r['img_size']} | {r['params_m']:.1f} | {r['train_gflops_per_image']:.1f} | "
              f"{r['peak_gib_batch64']:.1f} | {r['peak_gib_batch64_ckpt']:.1f} | "
              + " | ".join(str(r["max_batch"][c]) for c in CARDS) + " | "
              + " | ".join(str(r["max_batch_ckpt"][c]) for c in CARDS) + " |")
    out = ROOT / "benchmarks" / "results" / "plan_table.json"
    atomic_write_text(out, json.dumps({"rows": rows, "assumptions": "AdamW (fused), bf16 autocast, fused attention, "
                                       "needs = tensors + 0.5 GiB CUDA context + 8% allocator overhead",
                                       "environment": machine_info()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

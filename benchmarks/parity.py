"""Max abs logit difference between vitkit and its peers (timm, Hugging Face, Google .npz), float32.

    python benchmarks/parity.py        # prints the table, writes benchmarks/results/parity.json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from vitkit.runtime import machine_info
from vitkit.utils.fileio import atomic_write_text
from vitkit.weights import parity as pc

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in pc.TIMM_CASES:
            cfg = f"{case.size} d={case.depth} {case.img_size}px/p{case.patch_size} {case.timm_kwargs or ''}"
            rows.append(("timm", case.name, cfg, pc.run_timm_case(case, tmp)))
        for name in ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_base_patch32_384"):
            rows.append(("timm .pth", name, "full depth, registered name", pc.run_timm_pth_case(tmp, name)))
        for name in pc.TIMM_VARIANT_NAMES:  # LeViT (BatchNorm statistics measured) and CrossViT
            rows.append(("timm .pth", name, "full size, registered name; diff relative to max |logit|",
                         pc.run_timm_pth_case(tmp, name, relative=True)))
        for size in ("tiny", "small", "base"):
            rows.append(("hf", f"ViTForImageClassification {size}", "save_pretrained folder", pc.run_hf_case(tmp, size)))
        for key, diff in pc.run_npz_case(tmp).items():
            rows.append(("npz", key, "Google vision_transformer layout", diff))
    print(f"{'peer':10s} {'case':36s} {'max abs diff':>14s}")
    for peer, name, _, diff in rows:
        print(f"{peer:10s} {name:36s} {diff:14.3e}")
    worst = max(r[3] for r in rows)
    print(f"worst: {worst:.3e} (tolerance 1e-5)")
    result = {
        "tolerance": 1e-5,
        "worst_max_abs_diff": worst,
        "cases": [{"peer": p, "case": n, "config": c, "max_abs_diff": d} for p, n, c, d in rows],
        "environment": machine_info(),
    }
    out = ROOT / "benchmarks" / "results" / "parity.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())

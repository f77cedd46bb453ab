"""PyTorch's fused attention kernel against the explicit softmax(QK^T)V, fp32 and bf16, on this CPU.

Why: vitkit's attention takes the explicit path for bf16 on a CPU (``vitkit.models.layers.scaled_dot_product_attention``)
because PyTorch's CPU flash kernel is slow in bf16 on avx512_bf16 CPUs, while in fp32 it is as fast or faster. This
script is the measurement behind that rule, for the shapes vitkit trains and serves: the race model at 32 px, ViT-Ti/4
at 32 px, ViT-Ti/S/B/16 at 224 px. Median of several timed calls after warm-up.

    python benchmarks/attention_kernels.py [--threads 2] -> benchmarks/results/attention_kernels.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vitkit.models import layers  # noqa: E402
from vitkit.runtime import machine_info  # noqa: E402
from vitkit.utils.fileio import atomic_write_text  # noqa: E402

# (name, batch, heads, tokens, head_dim)
SHAPES = [
    ("race model, 32 px (batch 128)", 128, 4, 64, 32),
    ("ViT-Ti/4, 32 px (batch 128)", 128, 3, 65, 64),
    ("ViT-Ti/16, 224 px (batch 32)", 32, 3, 197, 64),
    ("ViT-S/16, 224 px (batch 32)", 32, 6, 197, 64),
    ("ViT-B/16, 224 px (batch 32)", 32, 12, 197, 64),
    ("ViT-Ti/16, 224 px (batch 1)", 1, 3, 197, 64),
]


def time_ms(fn, reps: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1000


def measure(batch: int, heads: int, tokens: int, dim: int, dtype: torch.dtype, backward: bool, reps: int) -> dict:
    q, k, v = (torch.randn(batch, heads, tokens, dim, dtype=dtype, requires_grad=backward) for _ in range(3))

    def sdpa_path():
        out = F.scaled_dot_product_attention(q, k, v)
        if backward:
            out.float().sum().backward()

    def explicit_path():  # what vitkit runs for bf16 on a CPU, timed in fp32 too for comparison
        out = layers.attention_weights(q, k) @ v
        if backward:
            out.float().sum().backward()

    sdpa, explicit = time_ms(sdpa_path, reps), time_ms(explicit_path, reps)
    return {"sdpa_ms": round(sdpa, 3), "explicit_ms": round(explicit, 3), "sdpa_over_explicit": round(sdpa / explicit, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attention_kernels.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rows = []
    for name, b, h, n, d in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for backward in (False, True):
                row = {"shape": name, "q_shape": [b, h, n, d], "dtype": str(dtype).removeprefix("torch."),
                       "pass": "forward+backward" if backward else "forward",
                       **measure(b, h, n, d, dtype, backward, args.reps)}
                rows.append(row)
                print(f"{name:32s} {row['dtype']:8s} {row['pass']:16s} sdpa {row['sdpa_ms']:8.2f} ms  explicit "
                      f"{row['explicit_ms']:8.2f} ms  sdpa/explicit {row['sdpa_over_explicit']:.2f}", flush=True)
    result = {"machine": machine_info(), "threads": args.threads, "reps": args.reps, "rows": rows,
              "rule": "vitkit takes the explicit path for bf16 on a CPU, SDPA otherwise"}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

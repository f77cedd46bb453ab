"""bf16 autocast against fp32 for one training step (forward + backward + AdamW) on this CPU, for the two race models.

Why: whether bf16 pays on a CPU depends on the instruction set (avx512_bf16 / AMX or not), on GEMM width and on the
attention kernel, so the race recipe's precision is chosen from this measurement. The vitkit model is timed four ways:
fp32; bf16 with PyTorch's SDPA kernel (what timm calls, and vitkit with EXPLICIT_BF16_ATTENTION_ON_CPU off); bf16
as vitkit runs it (explicit attention on a CPU, see vitkit.models.layers.scaled_dot_product_attention); and that plus
channels_last (NHWC) conv weights and inputs. Also times a 2048^2 GEMM in both precisions.

    python benchmarks/bf16_train_step.py [--threads 2] -> benchmarks/results/bf16_train_step.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import vitkit  # noqa: E402
from vitkit.models import layers  # noqa: E402
from vitkit.runtime import machine_info  # noqa: E402
from vitkit.utils.fileio import atomic_write_text  # noqa: E402

RACE_KWARGS = dict(conv_channels=[32, 64, 64, 128], conv_strides=[1, 2, 1, 2], embed_dim=128, depth=6, num_heads=4,
                   mlp_ratio=2.0, class_token=False, pooling="gap")


def step_img_per_s(model: torch.nn.Module, bf16: bool, steps: int, batch: int = 128, nhwc: bool = False) -> float:
    """Median img/s over ``steps`` timed steps after 2 warm-up steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if nhwc:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return batch / sorted(times)[len(times) // 2]


def gemm_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bf16_train_step.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    import timm

    models = {
        "vitkit race model (vit_hybrid_conv_tiny_32, recipe kwargs)":
            lambda: vitkit.create_model("vit_hybrid_conv_tiny_32", **RACE_KWARGS),
        "race baseline (timm vit_tiny_patch16_224, img 32, patch 4)":
            lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10),
    }
    result = {"machine": machine_info(), "batch": 128, "threads": args.threads, "models": {}}
    for name, make in models.items():
        model = make()
        fp32 = step_img_per_s(model, False, args.steps)
        row = {"fp32_img_s": round(fp32, 1)}
        if name.startswith("vitkit"):
            layers.EXPLICIT_BF16_ATTENTION_ON_CPU = False
            row["bf16_sdpa_kernel_img_s"] = round(step_img_per_s(model, True, args.steps), 1)
            layers.EXPLICIT_BF16_ATTENTION_ON_CPU = True
            row["bf16_img_s"] = round(step_img_per_s(model, True, args.steps), 1)
            row["bf16_channels_last_img_s"] = round(step_img_per_s(make(), True, args.steps, nhwc=True), 1)
        else:
            row["bf16_img_s"] = round(step_img_per_s(model, True, args.steps), 1)
        row.update({f"{k.removesuffix('_img_s')}_over_fp32": round(v / fp32, 2) for k, v in list(row.items())
                    if k != "fp32_img_s"})
        result["models"][name] = row
        print(f"{name}: {row}", flush=True)
    result["gemm_2048_gflops"] = {"fp32": round(gemm_gflops(torch.float32), 1),
                                  "bf16": round(gemm_gflops(torch.bfloat16), 1)}
    print("2048^2 GEMM GFLOP/s:", result["gemm_2048_gflops"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

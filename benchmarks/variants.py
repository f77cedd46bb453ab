"""Each variant at a CIFAR-sized (32 px) and a 224 px configuration: parameters, FLOPs, training and inference img/s.

FLOPs are counted by ``torch.utils.flop_counter`` for one image's forward pass (matmuls and convolutions; a
multiply-add is 2 FLOPs), with SDPA forced to its math path so attention's matmuls are counted for every variant
(the fused CPU kernel is invisible to the counter). Throughput is measured on this machine's CPU in fp32 (bf16
autocast is emulated, and much slower, on a CPU without AVX512-BF16): training = forward + backward + AdamW step,
inference = forward under no_grad, each the median of a few timed repeats after a warm-up. The CPU is shared with
other processes: the load average is recorded per case.

    PYTHONPATH=src python benchmarks/variants.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import load
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vitkit
from vitkit.runtime import machine_info
from vitkit.utils.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
# (variant, registry name, overrides, batch): the CIFAR config first, then the 224 px one.
CASES = [
    ("vit (baseline)", "vit_tiny_patch4_32", {}, 32),
    ("deit distilled", "deit_tiny_distilled_patch4_32", {}, 32),
    ("hybrid conv stem", "vit_hybrid_conv_tiny_32", {}, 32),
    ("window attention", "vit_tiny_window4_patch4_32", {}, 32),
    ("linear attention", "vit_tiny_linear_patch4_32", {}, 32),
    ("2D RoPE", "vit_tiny_rope_patch4_32", {}, 32),
    ("NaViT (packed)", "navit_tiny_patch4_32", {}, 32),
    ("vit (baseline)", "vit_tiny_patch16_224", {}, 4),
    ("deit distilled", "deit_tiny_distilled_patch16_224", {}, 4),
    ("hybrid R+Ti/16", "vit_hybrid_rti_tiny_224", {}, 4),
    ("hybrid R26+S/32", "vit_hybrid_r26_small_224", {}, 4),
    ("window attention", "vit_tiny_patch16_224", {"attention": "window", "window_size": 7, "global_blocks": (5, 11)}, 4),
    ("linear attention", "vit_tiny_patch16_224", {"attention": "linear"}, 4),
    ("2D RoPE", "vit_tiny_patch16_224", {"rope": True}, 4),
    ("NaViT (packed)", "navit_tiny_patch16", {}, 4),
    # appended after the first run, so that --flops-only keeps lining rows up with the cases
    ("LeViT-128S (stride-4 stem)", "levit_128s_stem4_32", {}, 32),
    ("CrossViT-Ti (patches 4 + 8)", "crossvit_tiny_patch4_32", {}, 32),
    ("LeViT-128S", "levit_128s", {}, 4),
    ("CrossViT-Ti", "crossvit_tiny_240", {}, 4),
]


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(name: str, overrides: dict, batch: int):
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides)
    size = model.config.get("img_size") or [224 if model.patch_size == 16 else 32] * 2  # NaViT: any size
    return model, torch.randn(batch, 3, *size), size


def forward_gflops(model: torch.nn.Module, image: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model.eval()(image)
    return round(counter.get_total_flops() / 1e9, 3)


def measure(variant: str, name: str, overrides: dict, batch: int, repeats: int) -> dict:
    model, x, size = build(name, overrides, batch)
    y = torch.randint(0, model.num_classes, (batch,))
    gflops = forward_gflops(model, x[:1])
    before = load()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    t_train = _timed(train_step, repeats)
    model.eval()
    with torch.no_grad():
        t_infer = _timed(lambda: model(x), repeats)
    return {"variant": variant, "model": name, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                            for k, v in overrides.items()},
            "img_size": size[0], "batch": batch, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "gflops": gflops, "train_img_per_s": round(batch / t_train, 1),
            "infer_img_per_s": round(batch / t_infer, 1), "loadavg_before": before, "loadavg_after": load()}


def table(rows: list[dict]) -> str:
    lines = ["| variant | model | img | params (M) | GFLOPs | train img/s | infer img/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = "" if not r["overrides"] else " (" + ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) + ")"
        lines.append(f"| {r['variant']} | `{r['model']}`{extra} | {r['img_size']} | {r['params_m']} | {r['gflops']} | "
                     f"{r['train_img_per_s']} | {r['infer_img_per_s']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "variants.json")
    parser.add_argument("--flops-only", action="store_true", help="recount the FLOPs of an existing result file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.flops_only:
        result = json.loads(args.out.read_text())
        for row, (_, name, overrides, _batch) in zip(result["rows"], CASES):
            model, x, _ = build(name, overrides, 1)
            row["gflops"] = forward_gflops(model, x)
        result["table_markdown"] = table(result["rows"])
        result["flops_command"] = "PYTHONPATH=src python " + " ".join(sys.argv)
        print(result["table_markdown"])
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        return
    rows = []
    for case in CASES:
        rows.append(measure(*case, repeats=args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "variants", "command": "PYTHONPATH=src python " + " ".join(sys.argv),
              "machine": machine_info(), "threads": args.threads,
              "precision": "fp32", "rows": rows, "table_markdown": table(rows)}
    print(result["table_markdown"])
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Training throughput (images/s) of the vitkit training loop on this CPU, fp32 vs bf16 autocast.

Each case is a real ``vitkit.train.train`` run (the one loop: BatchAugment, autocast, backward, clipping, fused
AdamW, schedule, logging) on synthetic images of the model's size, so the figure is what ``vitkit train`` achieves,
data path included. The throughput is the median of the logged img/s over the logging windows after the first one
(which holds warm-up). Cases: vit_tiny_patch16_224 at 224 px and vit_tiny_patch4_32 (32 px, patch 4).
Also records the digits default (``vitkit train`` with no arguments) when --digits is given.

    python benchmarks/train_throughput_cpu.py [--threads 2] [--digits]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import load

from vitkit.runtime import machine_info
from vitkit.train import load_config, train
from vitkit.utils.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]

CASES = [  # model, image size, precision, batch, logging window (optimizer steps), windows
    ("vit_tiny_patch16_224", 224, "fp32", 8, 2, 3),
    ("vit_tiny_patch16_224", 224, "bf16", 4, 1, 3),  # small: bf16 is emulated on a CPU without AVX512-BF16
    ("vit_tiny_patch4_32", 32, "fp32", 64, 2, 3),
    ("vit_tiny_patch4_32", 32, "bf16", 32, 1, 3),
]


def measure(model: str, size: int, batch: int, window: int, windows: int, precision: str, threads: int,
            out_dir: str) -> dict:
    cfg = load_config(None, [
        f"model.name={model}", "data.name=synthetic", f"data.kwargs={{num_samples: {batch * window * windows}, "
        f"image_size: {size}, num_classes: 10}}", "data.val_fraction=0", f"data.batch_size={batch}",
        "data.eval_batch_size=16", "data.crop_padding=4", "data.flip=true", f"train.precision={precision}",
        f"train.threads={threads}", "train.epochs=1", f"log.every_steps={window}", "log.progress=none",
        "log.tensorboard=false", "log.curves=false", "schedule.warmup_steps=1", f"checkpoint.out_dir={out_dir}",
    ])
    before = load()
    t0 = time.perf_counter()
    summary = train(cfg)
    records = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in records if r["kind"] == "step"]
    return {
        "model": model, "img_size": size, "batch": batch, "precision": precision, "threads": threads,
        "img_per_s": round(statistics.median(rates[1:]), 2), "img_per_s_windows": [round(r, 2) for r in rates],
        "steps": summary["steps"], "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(
            summary["peak_mem_mb"]), "loadavg_before": before, "loadavg_after": load(),
    }


def digits_default() -> dict:
    """`vitkit train` with no arguments, in a fresh process and a scratch directory, as `make run` runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        before = load()
        t0 = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.run([sys.executable, "-m", "vitkit", "train"], cwd=tmp, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        summary = json.loads(next(Path(tmp, "runs").glob("*/summary.json")).read_text())
    return {"command": "vitkit train", "test_acc1": round(summary["test_acc1"], 2),
            "test_images": summary["test_images"], "best_val_acc1": round(summary["best_val_acc1"], 2),
            "train_time_s": round(summary["wall_time_s"], 1), "process_wall_s": round(wall, 1),
            "steps": summary["steps"], "loadavg_before": before, "loadavg_after": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default: on a shared, oversubscribed CPU more threads measured slower")
    parser.add_argument("--digits", action="store_true", help="also time `vitkit train` (the digits default)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput_cpu.json"))
    args = parser.parse_args()
    result = {
        "benchmark": "train_throughput_cpu",
        "command": "python benchmarks/train_throughput_cpu.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "torch": torch.__version__, "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": load(),
        "method": "median logged img/s of vitkit.train.train on synthetic data, first logging window dropped",
        "cases": [],
    }
    with tempfile.TemporaryDirectory() as out_dir:
        for model, size, precision, batch, window, windows in CASES:
            row = measure(model, size, batch, window, windows, precision, args.threads, out_dir)
            print(json.dumps(row), flush=True)
            result["cases"].append(row)
    if args.digits:
        result["digits_default"] = digits_default()
        print(json.dumps(result["digits_default"]), flush=True)
    result["loadavg_end"] = load()
    if max(result["loadavg_start"] + result["loadavg_end"]) > result["machine"]["cores"]:
        result["load_note"] = "load average above the core count: other processes shared the CPU; figures are lower bounds"
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

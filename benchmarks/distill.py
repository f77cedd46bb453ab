"""Knowledge distillation on CIFAR-10: the same student, the same wall-clock budget, with and without a teacher.

1. Train a teacher briefly (a conv-stem hybrid ViT, which learns fast on 32 px images) for ``--teacher-s`` seconds.
2. Measure the student's optimizer-step rate with and without the teacher on synthetic 32 px batches (distillation
   adds a teacher forward per step, so in the same time the distilled student takes fewer steps).
3. Train the student (DeiT-style, with a distillation token) for ``--student-s`` seconds' worth of steps each way:
   baseline = labels only (both heads on the labels), distilled = DeiT hard distillation (alpha 0.5).
Everything runs through ``vitkit.train.train`` (the one loop); results go to benchmarks/results/distill.json.

    PYTHONPATH=src python benchmarks/distill.py [--teacher-s 300] [--student-s 240]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from train_throughput_cpu import cpu_model, load

from vitkit.train import load_config, train
from vitkit.utils.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VITKIT_CIFAR10_DIR", REPO.parent / "shared" / "data" / "cifar10"))
BATCH = 128
TEACHER = ["model.name=vit_hybrid_conv_tiny_32", "model.kwargs={embed_dim: 128, depth: 4, num_heads: 4}"]
STUDENT = ["model.name=deit_tiny_distilled_patch4_32",
           "model.kwargs={embed_dim: 96, depth: 4, num_heads: 3, mlp_ratio: 2.0}"]
COMMON = [f"data.batch_size={BATCH}", "data.eval_batch_size=500", "data.crop_padding=4", "data.flip=true",
          "train.precision=fp32", "train.threads=2", "train.epochs=100", "optim.lr=1e-3", "optim.weight_decay=0.05",
          "schedule.warmup_steps=20", "train.label_smoothing=0.0", "log.every_steps=25", "log.progress=none",
          "log.tensorboard=false", "log.curves=false"]


def cifar(out: Path) -> list[str]:
    return [f"data.name={DATA}", "data.val_fraction=0.02", f"data.cache_dir={REPO / 'runs' / '.cache'}",
            f"checkpoint.out_dir={out}"]


def steps_per_s(overrides: list[str], out: Path, steps: int = 12) -> float:
    """Optimizer steps per second of a config, from a short run on synthetic 32 px batches (no data wait)."""
    cfg = load_config(None, [*COMMON, *overrides, "data.name=synthetic", f"data.kwargs={{num_samples: "
                             f"{BATCH * steps}, image_size: 32, num_classes: 10}}", "data.val_fraction=0",
                             f"train.max_steps={steps}", "log.every_steps=4", f"checkpoint.out_dir={out}"])
    summary = train(cfg)
    records = [json.loads(x) for x in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in records if r["kind"] == "step"][1:]  # the first window holds warm-up
    return sum(rates) / len(rates) / BATCH


def run(overrides: list[str], steps: int, out: Path) -> dict:
    before = load()
    t0 = time.perf_counter()
    summary = train(load_config(None, [*COMMON, *overrides, *cifar(out), f"train.max_steps={steps}"]))
    return {"steps": steps, "images_seen": steps * BATCH, "test_acc1": round(summary["test_acc1"], 2),
            "best_val_acc1": round(summary["best_val_acc1"], 2), "wall_s": round(time.perf_counter() - t0, 1),
            "train_img_per_s": round(summary["train_img_per_s"] or 0, 1), "loadavg_before": before,
            "loadavg_after": load(), "run_dir": summary["run_dir"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-s", type=float, default=300)
    parser.add_argument("--student-s", type=float, default=240)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "distill.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"CIFAR-10 not found at {DATA} (set VITKIT_CIFAR10_DIR)")
    work = REPO / "runs" / "bench-distill"
    torch.manual_seed(0)

    teacher_steps = max(1, int(args.teacher_s * steps_per_s(TEACHER, work / "probe")))
    teacher = run([*TEACHER, "checkpoint.run_name=teacher"], teacher_steps, work)
    teacher_ckpt = Path(teacher["run_dir"]) / "best.safetensors"
    distill = [f"train.distill={{teacher: {teacher_ckpt}, kind: hard, alpha: 0.5}}"]

    rate_plain = steps_per_s(STUDENT, work / "probe")
    rate_distill = steps_per_s([*STUDENT, *distill], work / "probe")
    plain = run([*STUDENT, "checkpoint.run_name=student"], max(1, int(args.student_s * rate_plain)), work)
    distilled = run([*STUDENT, *distill, "checkpoint.run_name=student-distilled"],
                    max(1, int(args.student_s * rate_distill)), work)

    result = {
        "benchmark": "distill", "command": "PYTHONPATH=src python " + " ".join(sys.argv),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__},
        "data": str(DATA), "batch": BATCH, "budget_s": {"teacher": args.teacher_s, "student": args.student_s},
        "teacher": {"config": TEACHER, **teacher},
        "student_config": STUDENT, "steps_per_s": {"plain": round(rate_plain, 3), "distilled": round(rate_distill, 3)},
        "student_plain": plain, "student_distilled": {"distill": "hard, alpha 0.5", **distilled},
        "gain_test_acc1": round(distilled["test_acc1"] - plain["test_acc1"], 2),
    }
    print(json.dumps(result, indent=2))
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

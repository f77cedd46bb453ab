"""Knowledge distillation on CIFAR-10: the same student, the same wall-clock budget, with and without a teacher.

1. The teacher: ``--teacher CKPT`` (a vitkit checkpoint trained on CIFAR-10, e.g. the CIFAR race's
   ``runs/cifar10_race/*/best.safetensors``), or else one trained here for ``--teacher-s`` seconds (a conv-stem
   hybrid ViT, which learns fast on 32 px images). Its test top-1 is measured either way.
2. Train the student (DeiT-style, with a distillation token) for ``--student-s`` seconds each way
   (``train.time_budget_s``, so the teacher's forward passes are paid out of the distilled student's budget):
   baseline = labels only (both heads on the labels), distilled = DeiT hard distillation (alpha 0.5).
Everything runs through ``vitkit.train.train`` (the one loop); results go to benchmarks/results/distill.json.

    PYTHONPATH=src python benchmarks/distill.py [--teacher runs/cifar10_race/<run>/best.safetensors] [--student-s 240]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _common import load

from vitkit.runtime import machine_info
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


def run(overrides: list[str], budget_s: float, out: Path) -> dict:
    before = load()
    t0 = time.perf_counter()
    summary = train(load_config(None, [*COMMON, *overrides, *cifar(out), f"train.time_budget_s={budget_s}"]))
    return {"steps": summary["steps"], "images_seen": summary["train_images"], "budget_s": budget_s,
            "train_time_s": round(summary["train_time_s"], 1), "test_acc1": round(summary["test_acc1"], 2),
            "best_val_acc1": round(summary["best_val_acc1"], 2), "wall_s": round(time.perf_counter() - t0, 1),
            "train_img_per_s": round(summary["train_img_per_s"] or 0, 1), "loadavg_before": before,
            "loadavg_after": load(), "run_dir": summary["run_dir"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, help="a trained vitkit CIFAR-10 checkpoint (skips teacher training)")
    parser.add_argument("--teacher-s", type=float, default=300)
    parser.add_argument("--student-s", type=float, default=240)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "distill.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"CIFAR-10 not found at {DATA} (set VITKIT_CIFAR10_DIR)")
    work = REPO / "runs" / "bench-distill"
    torch.manual_seed(0)

    if args.teacher:
        from vitkit.train.evaluate import evaluate_checkpoint

        teacher_ckpt = args.teacher
        teacher = {"checkpoint": str(args.teacher),
                   "test_acc1": round(evaluate_checkpoint(args.teacher, str(DATA), split="test")["acc1"], 2)}
    else:
        teacher = {"config": TEACHER, **run([*TEACHER, "checkpoint.run_name=teacher"], args.teacher_s, work)}
        teacher_ckpt = Path(teacher["run_dir"]) / "best.safetensors"
    distill = [f"train.distill={{teacher: {teacher_ckpt}, kind: hard, alpha: 0.5}}"]

    plain = run([*STUDENT, "checkpoint.run_name=student"], args.student_s, work)
    distilled = run([*STUDENT, *distill, "checkpoint.run_name=student-distilled"], args.student_s, work)

    result = {
        "benchmark": "distill", "command": "PYTHONPATH=src python " + " ".join(sys.argv),
        "machine": machine_info(),
        "data": str(DATA), "batch": BATCH, "budget_s": {"teacher": args.teacher_s, "student": args.student_s},
        "teacher": teacher, "student_config": STUDENT,
        "student_plain": plain, "student_distilled": {"distill": "hard, alpha 0.5", **distilled},
        "gain_test_acc1": round(distilled["test_acc1"] - plain["test_acc1"], 2),
    }
    print(json.dumps(result, indent=2))
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

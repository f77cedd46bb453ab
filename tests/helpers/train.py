"""Shared by the training tests: a tiny ViT on tiny synthetic data, so a whole run takes about a second."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from vitkit.train.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
FAULT_DRIVER = REPO / "tests" / "helpers" / "fault_driver.py"  # run as a script, by path

TINY = [
    "data.name=synthetic",
    "data.kwargs={num_samples: 128, image_size: 8, num_classes: 4}",
    "data.batch_size=32",
    "data.val_fraction=0",  # synthetic has its own val split; 128 train images = whole batches
    "data.crop_padding=0",
    "model.name=vit_digits_patch2_8",
    "model.kwargs={embed_dim: 32, depth: 2, num_heads: 2}",
    "train.epochs=2",
    "train.threads=1",
    "schedule.warmup_steps=1",
    "log.progress=none",
    "log.tensorboard=false",
    "log.curves=false",
    "log.report=false",  # report.html has its own tests (tests/viz/test_report.py)
]


def tiny_config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(None, [*TINY, f"checkpoint.out_dir={tmp_path}", *overrides])


def run_cli(args: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m vitkit ...`` in a fresh process (single-threaded, like the in-process runs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vitkit", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_killed(die_after_step: int, sets: list[str], tmp_path: Path, timeout: float = 240
               ) -> subprocess.CompletedProcess:
    """Train ``sets`` in a fresh process that SIGKILLs itself (return code -9) after optimizer step ``die_after_step``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(FAULT_DRIVER), str(die_after_step),
                           *cli_sets(sets)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def cli_sets(cfg_overrides: list[str]) -> list[str]:
    out = []
    for item in cfg_overrides:
        out += ["--set", item]
    return out


def last_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(Path(run_dir) / "last.pt", map_location="cpu", weights_only=True)
    return state["model"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)

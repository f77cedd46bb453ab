"""torchrun with 2 CPU processes (gloo): the same weights as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import vitkit
from tests.helpers.train import FAULT_DRIVER, REPO, TINY, cli_sets, last_weights, max_abs_diff, tiny_config
from vitkit.train import train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

# No dropout, no augmentation: the 2 ranks' halves of each global batch then average to exactly the 1-process
# gradient. SGD with momentum keeps weight differences proportional to gradient differences (Adam's first steps
# amplify round-off of near-zero gradients). accum_steps=2 exercises DDP's no_sync on the inner micro-steps.
DDP_SAME = ["optim.name=sgd", "optim.lr=0.2", "optim.momentum=0.9", "train.max_steps=4", "data.batch_size=16",
            "train.accum_steps=2", "train.deterministic=true"]


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "vitkit", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def torchrun_killed(die_after_step: int, sets: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """torchrun of tests/helpers/fault_driver.py: every rank dies hard after optimizer step ``die_after_step``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(FAULT_DRIVER), str(die_after_step), *cli_sets(sets)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_processes_match_one(tmp_path):
    out = tmp_path / "ddp"
    proc = torchrun(["train", *cli_sets([*TINY, *DDP_SAME, f"checkpoint.out_dir={out}"])], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("test accuracy") == 1  # rank 0 alone reports
    run_dir = next(out.iterdir())
    single = train(tiny_config(tmp_path / "single", *DDP_SAME))
    diff = max_abs_diff(last_weights(run_dir), last_weights(single["run_dir"]))
    start = train(tiny_config(tmp_path / "start", *DDP_SAME, "optim.lr=1e-30"))  # ~ the initial weights
    assert max_abs_diff(last_weights(start["run_dir"]), last_weights(single["run_dir"])) > 1e-3
    assert diff < 1e-5, f"DDP weights differ from 1 process by {diff}"
    summary = torch.load(run_dir / "last.pt", weights_only=True)
    assert summary["geometry"] == [8, 2, 2]  # 8 images per process x 2 accumulation x 2 processes


def test_fsdp2_two_processes_crash_resume_match_one(tmp_path):
    """FSDP2 (fully_shard) on CPU/gloo: killed after step 3, resumed from the step-2 state, same weights as 1 process."""
    out = tmp_path / "fsdp"
    overrides = [*TINY, *DDP_SAME, f"checkpoint.out_dir={out}", "dist.strategy=fsdp", "checkpoint.every_steps=2"]
    sets = cli_sets(overrides)
    crashed = torchrun_killed(3, overrides, tmp_path)
    assert crashed.returncode != 0
    run_dir = next(out.iterdir())
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 2
    resumed = torchrun(["train", *sets, "--resume", str(run_dir)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    single = train(tiny_config(tmp_path / "single", *DDP_SAME))
    diff = max_abs_diff(last_weights(run_dir), last_weights(single["run_dir"]))
    assert diff < 1e-5, f"FSDP2 weights differ from 1 process by {diff}"
    best = vitkit.load_checkpoint(run_dir / "best.safetensors")  # gathered full weights rebuild the model
    assert best.num_classes == 4

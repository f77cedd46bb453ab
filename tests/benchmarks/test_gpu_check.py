"""benchmarks/gpu_check.py runs its whole GPU code path on the CPU with tiny shapes, so it cannot rot unrun."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_fills_every_section(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert load_gpu_check().main(["--dry-run", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert set(sections) == {"device", "train_steps", "plan_measure", "cifar10", "inference"}
    assert not [name for name, s in sections.items() if "error" in s or "skipped" in s], sections
    rows = sections["train_steps"]["rows"]
    assert {(r["impl"], r["precision"]) for r in rows} == {(i, p) for i in ("vitkit", "timm") for p in ("bf16", "fp16")}
    assert all(r["img_per_s"] > 0 and r["sdpa_backend"] and r["speed_vs_other"] > 0 for r in rows)
    plan_row = sections["plan_measure"]["rows"][0]
    assert abs(plan_row["memory_error"]) < 0.10 and plan_row["measured_step_s"] > 0
    assert 0 <= sections["cifar10"]["test_acc1"] <= 100
    assert {r["variant"] for r in sections["inference"]["rows"]} == {"eager fp32", "eager bf16", "compile bf16"}


def test_device_names_make_file_names():
    import torch

    assert load_gpu_check().device_name(torch.device("cpu")) == "cpu_dry_run"

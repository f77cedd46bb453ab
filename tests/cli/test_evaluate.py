"""`vitkit eval`: a checkpoint evaluated from the command line (fp32 and int8), its report and figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vitkit
from tests.helpers.train import tiny_config
from vitkit.train import train


def test_eval_cli_reports_and_draws_the_confusion_matrix(tmp_path, capsys):
    from vitkit.cli import main

    summary = train(tiny_config(tmp_path, "train.max_steps=2"))
    best = Path(summary["run_dir"]) / "best.safetensors"
    assert main(["eval", str(best), "--data", "synthetic"]) == 2
    assert "predicts 4 classes but 'synthetic' has 10" in capsys.readouterr().err
    args = ["eval", str(best), "--data", "synthetic", "--out", str(tmp_path / "ev"), "--data-arg", "num_samples=128",
            "--data-arg", "image_size=8", "--data-arg", "num_classes=4", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["acc1"] == pytest.approx(summary["test_acc1"])  # same weights, same test split
    assert len(result["per_class_acc"]) == 4 and (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    assert sum(map(sum, result["confusion"])) == 128 and (tmp_path / "ev" / "eval.json").is_file()


def test_vitkit_eval_runs_an_int8_model(tmp_path, capsys):
    """`vitkit eval --precision int8` evaluates the dynamically quantized model on the labelled split."""
    import json as _json

    from vitkit.cli import main
    from vitkit.data import build_dataset

    ds = build_dataset("digits", "test")
    torch.manual_seed(0)
    model = vitkit.create_model("vit_digits_patch2_8")
    ckpt = vitkit.save_checkpoint(model, tmp_path / "d.safetensors",
                                  metadata={"class_names": list(ds.classes), "mean": list(ds.mean), "std": list(ds.std)})
    results = {}
    for precision in ("fp32", "int8"):
        assert main(["eval", str(ckpt), "--data", "digits", "--precision", precision, "--json",
                     "--out", str(tmp_path / precision)]) == 0
        results[precision] = _json.loads(capsys.readouterr().out)
    assert results["int8"]["count"] == results["fp32"]["count"] == len(ds)
    assert abs(results["int8"]["acc1"] - results["fp32"]["acc1"]) <= 3.0
    assert (tmp_path / "int8" / "confusion.png").is_file()

"""`vitkit eval`: a trained checkpoint evaluated from the command line, its report and figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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

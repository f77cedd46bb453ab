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


def test_eval_of_a_plain_class_folder_evaluates_the_split_the_run_carved(tmp_path, capsys):
    """A run on ``<root>/<class>/<image>`` carves its validation split; `vitkit eval --split val` evaluates exactly
    those images (the checkpoint records the fraction and seed), and `--split train` the rest."""
    import numpy as np
    from PIL import Image

    from vitkit.cli import main

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for label, name in enumerate(("ants", "bees")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(60 + 120 * label, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    summary = train(tiny_config(tmp_path, f"data.name={root}", "data.kwargs={}", "data.val_fraction=0.25",
                                "data.batch_size=6", "train.seed=3", f"data.cache_dir={tmp_path / 'cache'}"))
    best = str(Path(summary["run_dir"]) / "best.safetensors")
    results = {}
    for split in ("val", "train"):
        assert main(["eval", best, "--data", str(root), "--split", split, "--json"]) == 0
        results[split] = json.loads(capsys.readouterr().out)
    assert results["val"]["count"] == summary["test_images"] == 6 and results["train"]["count"] == 18
    assert results["val"]["acc1"] == pytest.approx(summary["test_acc1"])  # the same 6 images, the same weights
    assert results["val"]["split_seed"] == 3 and results["val"]["split_source"] == "0.25 of photos"
    assert main(["eval", best, "--data", str(root), "--split", "val", "--val-fraction", "0"]) == 2
    assert "--val-fraction" in capsys.readouterr().err

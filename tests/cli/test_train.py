"""`vitkit train`'s config handling on the command line: bad keys refused before training, --print-config."""

from __future__ import annotations

import pytest
import yaml

from vitkit.cli import main


def test_cli_rejects_a_bad_key_before_training(capsys, tmp_path):
    assert main(["train", "--set", "train.epoch=3", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "epochs" in err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_cli_print_config_resolves_shorthands(capsys):
    assert main(["train", "--data", "synthetic", "--model", "vit_tiny_patch4_32", "--epochs", "3",
                 "--set", "optim.lr=1e-4", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["name"] == "synthetic" and cfg["model"]["name"] == "vit_tiny_patch4_32"
    assert cfg["train"]["epochs"] == 3 and cfg["optim"]["lr"] == pytest.approx(1e-4)

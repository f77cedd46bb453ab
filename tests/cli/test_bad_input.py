"""Every bad input the command line can be given ends in one ``error:`` line naming the bad thing, exit status 2,
and no traceback; ``--debug`` (or VITKIT_DEBUG=1) shows the traceback instead. Each case runs in process through
``vitkit.cli.main``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.helpers.infer import write_images
from tests.helpers.train import tiny_config
from vitkit.cli import main
from vitkit.train import train

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Inputs:
    """Real files the cases point at, so each case has exactly one thing wrong."""

    tmp: Path
    checkpoint: Path
    images: Path
    a_file: Path
    other_file: Path
    read_only: Path
    run_dir: Path | None = None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_checkpoint) -> Inputs:
    tmp = tmp_path_factory.mktemp("bad_input")
    write_images(tmp / "images", 2)
    a_file = tmp / "a_file.txt"
    a_file.write_text("not a folder\n")
    other = tmp / "existing.onnx"
    other.write_bytes(b"an earlier export")
    read_only = tmp / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    return Inputs(tmp, tiny_checkpoint, tmp / "images", a_file, other, read_only)


@pytest.fixture(scope="module")
def finished_run(inputs) -> Path:
    summary = train(tiny_config(inputs.tmp / "runs", "train.max_steps=2"))
    return Path(summary["run_dir"])


QUICK_TRAIN = ["--epochs", "1", "--set", "log.progress=none", "--set", "log.tensorboard=false",
               "--set", "log.curves=false", "--set", "log.report=false"]


def train_args(i: Inputs, *extra: str) -> list[str]:
    return ["train", *QUICK_TRAIN, "--out-dir", str(i.tmp / "runs"), *extra]


def case(name: str, argv, words: list[str], skip: bool = False, reason: str = ""):
    """One bad input: ``argv`` built from the inputs, and the words its one error line must contain."""
    return pytest.param(argv, words, id=name, marks=pytest.mark.skipif(skip, reason=reason))


CASES = [
    case("train-data-missing", lambda i: train_args(i, "--data", "/nonexistent"), ["/nonexistent"]),
    case("train-unknown-model", lambda i: train_args(i, "--model", "nonexistent_model"), ["nonexistent_model"]),
    case("train-model-typo-closest", lambda i: train_args(i, "--model", "vit_digits_patch2_9"), ["vit_digits_patch2_8"]),
    case("train-out-dir-under-a-file", lambda i: ["train", "--out-dir", str(i.a_file / "runs")],
     ["checkpoint.out_dir", "a_file.txt"]),
    case("train-out-dir-not-writable", lambda i: ["train", "--out-dir", str(i.read_only / "runs")],
         ["checkpoint.out_dir", "not writable"], skip=IS_ROOT, reason="root may write anywhere"),
    case("train-cache-dir-under-a-file", lambda i: train_args(i, "--set", f"data.cache_dir={i.a_file / 'cache'}"),
     ["data.cache_dir", "a_file.txt"]),
    case("train-cuda-without-cuda", lambda i: train_args(i, "--set", "train.device=cuda"), ["cuda"],
         skip=torch.cuda.is_available(), reason="this machine has CUDA"),
    case("train-model-kwargs-unknown", lambda i: train_args(i, "--set", "model.kwargs.bogus=1"), ["bogus"]),
    case("train-model-kwargs-typo", lambda i: train_args(i, "--set", "model.kwargs.dpeth=2"), ["dpeth", "depth"]),
    case("train-model-no-blocks", lambda i: train_args(i, "--set", "model.kwargs.depth=-1"), ["depth", "-1"]),
    case("train-zero-batch", lambda i: train_args(i, "-b", "0"), ["--batch-size", "0"]),
    case("train-zero-lr", lambda i: train_args(i, "--lr", "0"), ["--lr", "> 0"]),
    case("train-infinite-lr", lambda i: train_args(i, "--set", "optim.lr=.inf"), ["optim.lr", "finite", "inf"]),
    case("train-nan-weight-decay", lambda i: train_args(i, "--set", "optim.weight_decay=.nan"),
         ["optim.weight_decay", "finite"]),
    case("train-lr-so-high-the-loss-diverges", lambda i: train_args(i, "--lr", "1e30"), ["non-finite loss", "step"]),
    case("train-amp-and-precision", lambda i: train_args(i, "--amp", "--precision", "fp32"), ["--amp", "--precision"]),
    case("train-resume-changes-batch", lambda i: ["train", "--resume", str(i.run_dir), "--set", "data.batch_size=16"],
     ["data.batch_size"]),
    case("eval-missing-checkpoint", lambda i: ["eval", str(i.tmp / "missing.safetensors"), "--data", "digits"],
     ["missing.safetensors"]),
    case("eval-missing-data", lambda i: ["eval", str(i.checkpoint), "--data", "/nonexistent", "--out", str(i.tmp / "ev")],
     ["/nonexistent"]),
    case("eval-zero-batch", lambda i: ["eval", str(i.checkpoint), "--data", "synthetic", "--batch-size", "0"],
     ["--batch-size"]),
    case("eval-class-count", lambda i: ["eval", str(i.checkpoint), "--data", "synthetic", "--data-arg", "num_classes=4",
                                    "--data-arg", "num_samples=16", "--out", str(i.tmp / "ev")], ["10", "4"]),
    case("eval-unknown-data-option", lambda i: ["eval", str(i.checkpoint), "--data", "digits", "--data-arg", "x=1"],
         ["['x']", "digits"]),
    case("eval-unknown-synthetic-option", lambda i: ["eval", str(i.checkpoint), "--data", "synthetic", "--data-arg",
                                                     "bogus=1"], ["bogus", "num_samples"]),
    case("eval-out-under-a-file", lambda i: ["eval", str(i.checkpoint), "--data", "synthetic", "--out",
                                         str(i.a_file / "ev")], ["--out", "a_file.txt"]),
    case("cache-missing-folder", lambda i: ["cache", "/nonexistent", "--cache-dir", str(i.tmp / "cache")],
     ["/nonexistent"]),
    case("cache-dir-under-a-file", lambda i: ["cache", str(i.images), "--cache-dir", str(i.a_file / "c")],
     ["--cache-dir", "a_file.txt"]),
    case("predict-negative-topk", lambda i: ["predict", str(i.checkpoint), str(i.images), "--topk", "-1"], ["--topk"]),
    case("predict-zero-topk", lambda i: ["predict", str(i.checkpoint), str(i.images), "--topk", "0"], ["--topk"]),
    case("predict-out-under-a-file", lambda i: ["predict", str(i.checkpoint), str(i.images), "--out",
                                            str(i.a_file / "out.json")], ["a_file.txt"]),
    case("predict-out-is-the-checkpoint", lambda i: ["predict", str(i.checkpoint), str(i.images), "--out",
                                                 str(i.checkpoint)], ["input"]),
    case("predict-zero-batch", lambda i: ["predict", str(i.checkpoint), str(i.images), "--batch-size", "0"],
     ["--batch-size"]),
    case("predict-cuda-without-cuda", lambda i: ["predict", str(i.checkpoint), str(i.images), "--device", "cuda"],
         ["cuda"], skip=torch.cuda.is_available(), reason="this machine has CUDA"),
    case("serve-port-out-of-range", lambda i: ["serve", str(i.checkpoint), "--port", "99999"], ["--port", "99999"]),
    case("serve-missing-checkpoint", lambda i: ["serve", str(i.tmp / "missing.safetensors")], ["missing.safetensors"]),
    case("plan-negative-batch", lambda i: ["plan", "vit_tiny_patch16_224", "--batch", "-5"], ["batch"]),
    case("plan-zero-batch-size", lambda i: ["plan", "vit_tiny_patch16_224", "--batch-size", "0"], ["--batch-size"]),
    case("plan-unknown-model", lambda i: ["plan", "vit_tiny_patch16_244"], ["vit_tiny_patch16_224"]),
    case("export-over-its-input", lambda i: ["export", str(i.checkpoint), "--format", "onnx", "--out", str(i.checkpoint)],
     ["input"]),
    case("export-over-its-input-even-forced", lambda i: ["export", str(i.checkpoint), "--format", "safetensors", "--out",
                                                     str(i.checkpoint), "--force"], ["input"]),
    case("export-existing-output", lambda i: ["export", str(i.checkpoint), "--format", "onnx", "--out",
                                          str(i.other_file)], ["--force"]),
    case("export-out-is-a-folder", lambda i: ["export", str(i.checkpoint), "--format", "onnx", "--out", str(i.tmp)],
     ["folder"]),
    case("export-out-empty", lambda i: ["export", str(i.checkpoint), "--format", "onnx", "--out", ""], ["empty"]),
    case("export-hf-into-a-file", lambda i: ["export", str(i.checkpoint), "--format", "hf", "--out", str(i.a_file)],
     ["a_file.txt"]),
    case("bench-zero-reps", lambda i: ["bench", str(i.checkpoint), "--reps", "0"], ["--reps"]),
    case("unknown-command", lambda i: ["trian"], ["trian"]),
]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error:"), err
    return errors[0]


@pytest.mark.parametrize(("argv", "words"), CASES)
def test_bad_input_is_one_error_line(argv, words, inputs, request, capsys):
    if "resume" in request.node.callspec.id:
        inputs.run_dir = request.getfixturevalue("finished_run")
    capsys.readouterr()
    assert main(argv(inputs)) == 2
    line = _error_line(capsys.readouterr().err)
    for word in words:
        assert word in line, line


def test_debug_flag_shows_the_traceback(inputs):
    """--debug (before or after the command) and VITKIT_DEBUG=1 re-raise the expected failure."""
    argv = ["eval", str(inputs.tmp / "missing.safetensors"), "--data", "digits"]
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        main(["--debug", *argv])
    with pytest.raises(FileNotFoundError):
        main([*argv, "--debug"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITKIT_DEBUG", "1")
        with pytest.raises(FileNotFoundError):
            main(argv)


def test_export_replaces_an_existing_output_only_when_forced(inputs, capsys):
    """The refusal is not a dead end: --force replaces an earlier export, and the input checkpoint is untouched."""
    before = inputs.checkpoint.read_bytes()
    out = inputs.tmp / "forced.safetensors"
    out.write_bytes(b"stale")
    assert main(["export", str(inputs.checkpoint), "--format", "safetensors", "--out", str(out)]) == 2
    assert out.read_bytes() == b"stale"
    assert main(["export", str(inputs.checkpoint), "--format", "safetensors", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"stale" and inputs.checkpoint.read_bytes() == before

"""The parser itself: built without torch, every option's help shows its default, the copied choices match the
library, shared names mean one thing, `vitkit train`'s shorthands, --version, a closed stdout."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import vitkit
from vitkit.cli import build_parser, choices, main
from vitkit.cli.arguments import HelpFormatter, inference_device, positive_int

SRC = Path(__file__).resolve().parents[2] / "src"
HEAVY = ("torch", "torchvision", "numpy", "PIL", "matplotlib", "onnx", "onnxruntime", "safetensors", "yaml")


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, **kwargs)


def test_building_the_parser_imports_nothing_heavy():
    """`vitkit --help` and `vitkit <cmd> --help` must not wait for torch: the console script imports `vitkit`, then
    `vitkit.cli`, then builds every subcommand's parser and prints."""
    code = ("import sys, vitkit; from vitkit.cli import build_parser; build_parser().format_help(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_help_of_every_command_prints_without_importing_torch():
    code = ("import sys; from vitkit.cli import main\n"
            "for cmd in ([], ['train'], ['eval'], ['predict'], ['export'], ['bench'], ['serve'], ['plan'], ['cache'],"
            " ['models'], ['smoke'], ['viz'], ['viz', 'attention'], ['viz', 'report']):\n"
            "    assert main([*cmd, '--help']) == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "--batch-size" in done.stdout and "usage: vitkit train" in done.stdout


def test_package_names_load_on_first_use():
    """`import vitkit` is lazy, yet vitkit.create_model and the subpackages work as if imported up front."""
    done = _python("import sys, vitkit; assert 'torch' not in sys.modules; m = vitkit.create_model('vit_digits_patch2_8'); "
                   "assert vitkit.weights.load_checkpoint is vitkit.load_checkpoint; "
                   "assert 'vit_digits_patch2_8' in vitkit.list_models(); print(type(m).__name__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "VisionTransformer"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vitkit.nope  # noqa: B018


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vitkit {vitkit.__version__}"


def test_copied_choices_match_the_library():
    from vitkit.data.cache import ENV_CACHE_DIR
    from vitkit.infer.bench import BACKENDS
    from vitkit.infer.export import DEFAULT_ATOL, EXPORT_FORMATS
    from vitkit.infer.predict import PRECISIONS
    from vitkit.infer.quantize import CALIBRATION_METHODS
    from vitkit.plan import memory, planner
    from vitkit.train.config import TrainConfig
    from vitkit.viz.attention import HEAD_FUSIONS

    assert choices.BENCH_BACKENDS == BACKENDS
    assert choices.EXPORT_FORMATS == EXPORT_FORMATS and choices.EXPORT_DEFAULT_ATOL == DEFAULT_ATOL
    assert choices.INFERENCE_PRECISIONS == PRECISIONS
    assert choices.CALIBRATION_METHODS == CALIBRATION_METHODS
    assert choices.ENV_CACHE_DIR == ENV_CACHE_DIR
    assert choices.PLAN_PRECISIONS == memory.PRECISIONS and choices.PLAN_OPTIMIZERS == tuple(memory.OPTIMIZERS)
    assert choices.PLAN_STRATEGIES == planner.STRATEGIES
    assert choices.HEAD_FUSIONS == HEAD_FUSIONS
    import typing

    assert choices.TRAIN_PRECISIONS == typing.get_args(typing.get_type_hints(TrainConfig)["precision"])


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "vitkit"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


FLAGS = (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def test_every_option_says_its_default():
    parser = build_parser()
    missing = []
    for command, sub in [("vitkit", parser), *_subparsers(parser)]:
        for action in sub._actions:
            if isinstance(action, FLAGS) or action.required or (not action.option_strings and action.nargs != "?"):
                continue
            text = HelpFormatter("x")._get_help_string(action)
            if "default" not in text.lower():
                missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_shared_option_names_mean_one_thing():
    """--batch-size is a positive int everywhere; --json is a flag wherever it exists (files go to --out)."""
    parser = build_parser()
    seen = set()
    for command, sub in _subparsers(parser):
        options = sub._option_string_actions
        if "--batch-size" in options:
            seen.add(command)
            assert options["--batch-size"].type is positive_int, command
        if "--json" in options:
            assert isinstance(options["--json"], argparse._StoreTrueAction), command
    assert {"vitkit train", "vitkit eval", "vitkit predict", "vitkit bench", "vitkit plan"} <= seen


def test_train_shorthands_set_their_keys_and_set_wins(capsys):
    assert main(["train", "--lr", "3e-4", "-b", "16", "--img-size", "12", "--precision", "bf16", "--workers", "0",
                 "--seed", "7", "--pretrained", "w.safetensors", "--epochs", "2", "--set", "train.seed=9",
                 "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == pytest.approx(3e-4) and cfg["data"]["batch_size"] == 16
    assert cfg["data"]["img_size"] == 12 and cfg["train"]["precision"] == "bf16"
    assert cfg["data"]["num_workers"] == 0 and cfg["model"]["pretrained"] == "w.safetensors"
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["seed"] == 9  # --set is applied after the shorthands


def test_amp_is_bf16_on_a_cpu_and_fp16_on_an_old_gpu(capsys, monkeypatch):
    import torch

    assert main(["train", "--amp", "--set", "train.device=cpu", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["precision"] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert main(["train", "--amp", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["precision"] == "fp16"
    assert main(["train", "--amp", "--set", "train.precision=fp32", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["precision"] == "fp32"


def test_inference_commands_default_to_cuda_when_present(monkeypatch):
    import torch

    parser = build_parser()
    for argv in (["predict", "m", "x"], ["eval", "m", "--data", "digits"], ["bench", "m"], ["serve", "m"]):
        assert parser.parse_args(argv).device == "auto", argv
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device("auto") == "cuda:0"
    assert inference_device("auto", "int8") == "cpu"  # dynamic INT8 layers run on the CPU only
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device("auto") == "cpu"


def test_a_closed_stdout_ends_quietly():
    """`vitkit models --json | head`: the reader leaves early; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "vitkit", "models", "vit_tiny_*", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    proc.stdout.close()  # before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == "", err


def test_train_help_states_the_embedded_defaults():
    from vitkit.cli.train import EMBEDDED_DEFAULTS, SHORTHANDS
    from vitkit.train.config import Config

    cfg = Config()
    for key, text in EMBEDDED_DEFAULTS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        assert text == str(value) if value is not None else text in ("none", "the data's own size", "automatic"), key
    assert set(EMBEDDED_DEFAULTS) == {key for _, key in SHORTHANDS} - {"checkpoint.resume"}

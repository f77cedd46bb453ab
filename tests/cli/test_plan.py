"""`vitkit plan`: JSON with --measure, non-positive inputs refused in one line, a given throughput."""

import argparse
import json

import pytest

from vitkit.plan.planner import PlanRequest, plan


def test_plan_command_json_with_measure(capsys):
    from vitkit.cli.plan import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", "vit_digits_patch2_8", "--batch", "32", "--precision", "fp32", "--gpu", "cpu:16",
                              "--measure", "--json", "--dataset-size", "50000", "--throughput", "1000"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["measured"]["memory_error"]) < 0.10
    assert abs(out["measured"]["flops_error"]) < 0.02
    assert out["accelerators"][0]["epoch_hours"] == pytest.approx(50000 / 1000 / 3600)


def test_plan_refuses_non_positive_inputs_in_one_line(capsys):
    from vitkit.cli import main

    for flag, value in [("--batch", "-5"), ("--epochs", "0"), ("--devices", "0"), ("--dataset-size", "0")]:
        assert main(["plan", "vit_tiny_patch16_224", flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and flag.lstrip("-") in err[0], err


def test_given_throughput_is_what_the_footnote_says(capsys):
    from vitkit.cli import main

    assert main(["plan", "vit_tiny_patch16_224", "--gpu", "RTX4090", "--throughput", "5000", "--epochs", "10",
                 "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "given throughput, 5000 img/s" in out and "MFU" not in out and "predicted (not measured)" not in out
    assert "10 ep (h)" in out
    result = plan(PlanRequest("vit_tiny_patch16_224", num_classes=10, gpu="RTX4090", throughput=5000))
    assert result.accelerators[0].bound == "given" and result.params < 5_600_000  # a 10-class head

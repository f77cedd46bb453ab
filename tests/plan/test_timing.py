"""The GPU time model: its kernels carry the closed-form FLOPs; the committed validation used the constants in code."""

import json

import pytest

import vitkit
from vitkit.plan.flops import ViTShape, vit_flops


@pytest.mark.parametrize("mode,fused", [("train", True), ("train", False), ("infer", True), ("infer", False)])
def test_time_model_kernels_carry_the_closed_form_flops(mode, fused):
    from vitkit.plan.timing import step_kernels

    shape = ViTShape.from_config(vitkit.create_model("vit_base_patch16_224").config)
    kernels = step_kernels(shape, 8, mode, "bf16", fused, "adamw", 86_567_656)
    assert sum(k.flops for k in kernels) == pytest.approx(8 * vit_flops(shape, mode, False, fused)["total"])


def test_time_model_is_within_its_goal_on_the_published_tables():
    """The committed validation (benchmarks/plan_gpu_validation.py) was made with the constants in code."""
    from pathlib import Path

    from vitkit.plan.timing import FITTED

    result = json.loads((Path(__file__).resolve().parents[2] / "benchmarks/results/plan_gpu_validation.json").read_text())
    assert result["constants_in_code"] == FITTED.as_dict()
    for mode in ("train", "infer"):
        s = result["summary"][mode]
        assert s["rows"] >= 20 and s["median_abs_error"] <= 0.15 and s["worst_abs_error"] <= 0.30

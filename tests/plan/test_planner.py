"""The planner: the table of accelerators, fits and suggestions, step times, what it refuses to plan."""

import argparse
import json

import pytest

from vitkit.models import VisionTransformer
from vitkit.plan.flops import ViTShape
from vitkit.plan.gpus import get_accelerator
from vitkit.plan.measure import measure_step
from vitkit.plan.memory import estimate_memory
from vitkit.plan.planner import PlanRequest, _memory, _needed, _shape, format_plan, plan, runs_fused_attention


def test_planner_refuses_hybrid_clearly():
    from vitkit.plan.planner import PlanRequest, plan

    with pytest.raises(ValueError, match="HybridVisionTransformer"):
        plan(PlanRequest(model="vit_hybrid_conv_tiny_32"))


@pytest.mark.parametrize("name, overrides", [("vit_tiny_window4_patch4_32", {}), ("vit_tiny_rope_patch4_32", {}),
                                             ("vit_tiny_patch16_224", {"mlp_dwconv": True})])
def test_planner_refuses_options_its_closed_form_does_not_model(name, overrides):
    from vitkit.plan.planner import PlanRequest, plan

    with pytest.raises(ValueError, match="does not model"):
        plan(PlanRequest(model=name, overrides=overrides))


def test_plan_table_and_largest_batch_is_the_boundary():
    req = PlanRequest("vit_base_patch16_224", batch=256, precision="bf16")
    result = plan(req)
    assert result.params == 86_567_656
    names = {a.name for a in result.accelerators}
    assert {"RTX3060-12GB", "RTX3090-24GB", "RTX4090-24GB", "A100-40GB", "A100-80GB", "H100-SXM-80GB", "H200-141GB",
            "L4-24GB", "T4-16GB"} <= names
    shape, params, _ = _shape(req)
    for fit in result.accelerators:
        acc = get_accelerator(fit.name)
        if fit.max_micro_batch:
            assert _needed(acc, _memory(req, shape, params, fit.max_micro_batch)) <= acc.memory_bytes
        assert _needed(acc, _memory(req, shape, params, fit.max_micro_batch + 1)) > acc.memory_bytes
        if not fit.fits:
            assert fit.suggestion and fit.suggestion_gib is not None and fit.suggestion_gib * 2**30 <= acc.memory_bytes
    rtx3060 = next(a for a in result.accelerators if a.name == "RTX3060-12GB")
    assert not rtx3060.fits and "accumulation" in rtx3060.suggestion
    assert "RTX3060-12GB" in format_plan(result)


def test_plan_suggests_fsdp_when_one_device_cannot_hold_the_states():
    # a 48-block ViT-H (0.94 B params): weights + grads + AdamW states alone are 15 GB
    req = PlanRequest("vit_huge_patch14_224", batch=8, precision="bf16", overrides={"depth": 48})
    fit = plan(req, accelerators=["RTX3060-12GB"]).accelerators[0]
    assert not fit.fits and fit.max_micro_batch == 0 and "FSDP over 2 devices" in fit.suggestion


def test_t4_has_no_bf16_and_plans_fp16():
    result = plan(PlanRequest("vit_small_patch16_224", batch=4096, precision="fp32"), accelerators=["T4"])
    assert "fp16 autocast" in result.accelerators[0].suggestion
    bf16 = plan(PlanRequest("vit_small_patch16_224", batch=32, precision="bf16"), accelerators=["T4"])
    assert "no bf16" in bf16.accelerators[0].suggestion and bf16.accelerators[0].epoch_hours is not None


def test_plan_errors_are_clear():
    with pytest.raises(ValueError, match="not divisible by devices x accum"):
        plan(PlanRequest("vit_tiny_patch16_224", batch=30, accum=4))
    with pytest.raises(ValueError, match="unknown accelerator 'B200'"):
        plan(PlanRequest("vit_tiny_patch16_224", gpu="B200"))
    with pytest.raises(KeyError, match="unknown model"):
        plan(PlanRequest("vit_teeny"))


def test_plan_assumes_explicit_attention_for_bf16_on_a_cpu(capsys):
    """vitkit runs bf16 attention on a CPU as two matmuls that keep (B, H, N, N) probabilities: a CPU plan counts
    them, and its prediction lands closer to the measured step than the fused-kernel estimate does."""
    from vitkit.cli.plan import add_parser

    assert runs_fused_attention("cuda", "bf16") and runs_fused_attention("cpu", "fp32")
    assert not runs_fused_attention("cpu", "bf16")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    cfg = dict(img_size=64, patch_size=4, embed_dim=96, depth=3, num_heads=3, num_classes=10)  # 256 tokens
    model = VisionTransformer(**cfg)
    shape = ViTShape.from_config(model.config)
    params = sum(p.numel() for p in model.parameters())
    measured = measure_step(model, 4, "train", "bf16", "adamw", False).peak_bytes
    errors = {fused: abs(estimate_memory(shape, 4, "train", "bf16", "adamw", False, fused, num_params=params).peak
                         - measured) / measured for fused in (True, False)}
    assert errors[False] < 0.05 and errors[False] < errors[True], errors
    args = parser.parse_args(["plan", "vit_digits_patch2_8", "--batch", "16", "--precision", "bf16", "--gpu", "cpu:16",
                              "--measure", "--device", "cpu", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["request"]["fused_attention"] is False
    assert abs(out["measured"]["flops_error"]) < 0.005  # explicit attention's backward: 4 matmuls, not SDPA's 5
    assert abs(out["measured"]["memory_error"]) < 0.10
    args = parser.parse_args(["plan", "vit_digits_patch2_8", "--precision", "bf16", "--gpu", "A100-80GB"])
    assert args.func(args) == 0
    assert "explicit" not in capsys.readouterr().out


def test_plan_times_vit_b_on_an_rtx3090_as_timm_measured_it():
    """timm's RTX 3090 AMP table: ViT-B/16 at batch 192 trains at 390.9 img/s (PyTorch 1.12: eager attention, SGD)."""
    req = PlanRequest("vit_base_patch16_224", batch=192, precision="fp16", optimizer="sgd", fused_attention=False,
                      gpu="rtx 3090", epochs=300)
    fit = plan(req).accelerators[0]
    assert abs(fit.images_per_second / 390.9 - 1) < 0.10 and fit.bound == "compute"
    assert fit.step_seconds == pytest.approx(192 / fit.images_per_second)
    assert fit.total_hours == pytest.approx(300 * 1_281_167 / fit.images_per_second / 3600)
    text = format_plan(plan(req))
    assert "img/s" in text and "step (s)" in text and "bound" in text and "predicted (not measured)" in text


def test_plan_accumulation_and_devices_scale_the_step():
    one = plan(PlanRequest("vit_small_patch16_224", batch=256, gpu="A100-80GB")).accelerators[0]
    accum = plan(PlanRequest("vit_small_patch16_224", batch=256, accum=4, gpu="A100-80GB")).accelerators[0]
    ddp = plan(PlanRequest("vit_small_patch16_224", batch=256, devices=4, strategy="ddp", gpu="A100-80GB")).accelerators[0]
    assert accum.step_seconds > one.step_seconds and ddp.images_per_second > 3 * one.images_per_second
    assert plan(PlanRequest("vit_small_patch16_224", gpu="cpu:16")).accelerators[0].images_per_second is None


def test_measure_predicts_one_devices_step_and_traced_plans_are_not_timed():
    from vitkit.plan.planner import predicted_device_step

    req = PlanRequest("vit_small_patch16_224", batch=256, accum=2, devices=2, strategy="ddp")
    one = predicted_device_step(req, get_accelerator("H200"))
    alone = plan(PlanRequest("vit_small_patch16_224", batch=64), accelerators=["H200"]).accelerators[0]
    assert one.seconds == pytest.approx(alone.step_seconds) and one.bound in ("compute", "memory", "overhead")
    levit = plan(PlanRequest("levit_128", batch=64), accelerators=["RTX4090"]).accelerators[0]
    assert levit.images_per_second is None and levit.epoch_hours is None

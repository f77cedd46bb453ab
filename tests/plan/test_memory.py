"""The planner's memory closed form, checked against measured peaks of real (tiny) steps, and how its terms behave."""

import pytest
import torch

import vitkit
from tests.helpers.plan import SMALL
from vitkit.models import VisionTransformer
from vitkit.plan.flops import ViTShape
from vitkit.plan.measure import measure_step
from vitkit.plan.memory import estimate_memory
from vitkit.plan.planner import runs_fused_attention


@pytest.mark.parametrize(
    "mode,precision,ckpt",
    [("train", "fp32", False), ("train", "bf16", False), ("train", "fp32", True), ("train", "bf16", True),
     ("infer", "fp32", False), ("infer", "bf16", False)],
)
def test_memory_estimate_within_10_percent_of_measured(mode, precision, ckpt):
    torch.manual_seed(0)
    model = VisionTransformer(**SMALL)
    shape = ViTShape.from_config(model.config)
    fused = runs_fused_attention("cpu", precision)  # bf16 on a CPU: explicit attention, its N x N matrices counted
    est = estimate_memory(shape, 8, mode, precision, "adamw", ckpt, fused,
                          num_params=sum(p.numel() for p in model.parameters()))
    measured = measure_step(model, 8, mode, precision, "adamw", ckpt)
    assert abs(est.peak - measured.peak_bytes) / measured.peak_bytes < 0.10, (est.peak, measured.peak_bytes)


def test_memory_terms_behave():
    shape = ViTShape.from_config(vitkit.create_model("vit_base_patch16_224").config)
    small, big = estimate_memory(shape, 8), estimate_memory(shape, 64)
    assert big.peak > small.peak and big.activations > 7 * small.activations
    bf16 = estimate_memory(shape, 64, precision="bf16")
    assert bf16.activations < big.activations and bf16.weight_copies > 0
    ckpt = estimate_memory(shape, 64, grad_checkpointing=True)
    assert ckpt.peak < big.peak / 2
    sharded = estimate_memory(shape, 8, shard_factor=4)
    assert sharded.optimizer_states == small.optimizer_states // 4
    ddp = estimate_memory(shape, 8, grads_resident=True)
    assert ddp.peak - small.peak > 0.9 * small.gradients  # DDP buckets hold the gradients all step long
    explicit = estimate_memory(shape, 8, fused_attention=False)
    assert explicit.attention_workspace > 0 and explicit.peak > small.peak
    assert estimate_memory(shape, 8, "infer", "int8").weights < estimate_memory(shape, 8, "infer", "bf16").weights
    with pytest.raises(ValueError, match="int8 is an inference precision"):
        estimate_memory(shape, 8, "train", "int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        estimate_memory(shape, 8, precision="fp8")

"""The planner's memory model for LoRA fine-tuning."""

import pytest
import torch

import vitkit

pytest.importorskip("peft")
from vitkit.models.lora import lora_parameter_count  # noqa: E402
from vitkit.plan.lora import lora_memory  # noqa: E402


def test_planner_memory_for_lora_drops_gradients_and_optimizer_states():
    full, lora = lora_memory("vit_base_patch16_224", rank=8, batch=32)
    with torch.device("meta"):
        trainable = lora_parameter_count(vitkit.create_model("vit_base_patch16_224"), 8)
    assert lora.gradients == 4 * trainable and lora.optimizer_states == 8 * trainable  # AdamW: two fp32 states
    assert lora.peak < full.peak and lora.weights > full.weights  # adapters add weights, remove most states

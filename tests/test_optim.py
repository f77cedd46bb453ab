"""Parameter groups (weight decay, layer-wise lr decay) and the optimizer factory (vitkit.optim)."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.optim import OptimConfig, build_optimizer, param_groups


@pytest.fixture
def model():
    return vitkit.create_model("vit_digits_patch2_8", depth=3, reg_tokens=2)


def _names(groups, decayed: bool) -> set[str]:
    return {n for g in groups if (g["weight_decay"] > 0) == decayed for n in g["names"]}


def test_no_weight_decay_on_norms_biases_embeddings_and_tokens(model):
    groups = param_groups(model, weight_decay=0.05)
    no_decay = _names(groups, decayed=False)
    for name in ("pos_embed", "cls_token", "reg_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias",
                 "norm.weight", "head.bias", "patch_embed.proj.bias"):
        assert name in no_decay, name
    decayed = _names(groups, decayed=True)
    assert {"blocks.0.attn.qkv.weight", "blocks.2.mlp.fc1.weight", "head.weight", "patch_embed.proj.weight"} <= decayed
    assert no_decay | decayed == {n for n, _ in model.named_parameters()}


def test_layer_wise_lr_decay(model):
    opt = build_optimizer(model, OptimConfig(lr=1.0, layer_decay=0.5), torch.device("cpu"))
    lr_of = {}
    for group in opt.param_groups:
        for p in group["params"]:
            lr_of[next(n for n, q in model.named_parameters() if q is p)] = group["lr"]
    # num_layers = depth + 2 = 5: embeddings 0.5^4, block i 0.5^(3-i), head 1
    assert lr_of["head.weight"] == 1.0 and lr_of["norm.weight"] == 1.0
    assert lr_of["blocks.2.mlp.fc1.weight"] == 0.5
    assert lr_of["blocks.0.mlp.fc1.weight"] == 0.125
    assert lr_of["pos_embed"] == lr_of["patch_embed.proj.weight"] == 0.0625


@pytest.mark.parametrize("name, impl", [("adamw", "auto"), ("adamw", "foreach"), ("sgd", "auto"), ("adamw", "loop")])
def test_optimizer_choices(model, name, impl):
    opt = build_optimizer(model, OptimConfig(name=name, impl=impl), torch.device("cpu"))
    assert type(opt).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[name]
    if name == "adamw" and impl == "auto":
        assert opt.defaults["fused"]  # fused AdamW exists for CPU tensors since torch 2.4

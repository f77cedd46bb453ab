"""Parameter groups (weight decay, layer-wise lr decay) and the per-step schedules."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.optim import OptimConfig, build_optimizer, param_groups
from vitkit.train.config import ScheduleConfig
from vitkit.train.schedule import build_scheduler


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


def _lrs(cfg: ScheduleConfig, steps_per_epoch: int, total: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_to_the_floor():
    lrs = _lrs(ScheduleConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.1), steps_per_epoch=10, total=100)
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)  # linear warmup over 10 steps
    assert lrs[10] == pytest.approx(1.0)  # the peak right after warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then never rising
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)  # ends at the floor
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)  # cosine midpoint


def test_constant_and_step_schedules():
    const = _lrs(ScheduleConfig(name="constant", warmup_steps=0), 10, 30)
    assert set(const) == {1.0}
    step = _lrs(ScheduleConfig(name="step", warmup_steps=0, step_epochs=1, gamma=0.5), 10, 30)
    assert step[9] == 1.0 and step[10] == 0.5 and step[29] == 0.25


def test_schedule_state_survives_weights_only_save(tmp_path):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, ScheduleConfig(), 10, 100)
    for _ in range(7):
        opt.step()
        sched.step()
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_scheduler(opt2, ScheduleConfig(), 10, 100)
    sched2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert sched2.get_last_lr() == sched.get_last_lr()

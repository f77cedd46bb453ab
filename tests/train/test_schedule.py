"""The per-step learning-rate schedules and their saved state."""

from __future__ import annotations

import pytest
import torch

from vitkit.train.config import ScheduleConfig
from vitkit.train.schedule import build_scheduler


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

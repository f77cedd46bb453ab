"""Progressive resolution (data.size_schedule), batch scaling and time budgets in the one training loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from train_helpers import tiny_config
from vitkit import create_model
from vitkit.data.resolution import size_at
from vitkit.train import train
from vitkit.train.config import ConfigError, load_config

PROGRESSIVE = ["data.size_schedule=[[0, 4], [0.5, 8]]", "train.epochs=4"]  # 2x2 tokens for half the run, then 4x4


def _record_inputs(model: torch.nn.Module) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)) if _m.training else None)
    return shapes


def _model(cfg):
    from vitkit.train.engine import build_model

    return build_model(cfg, num_classes=4, in_chans=3, img_size=(8, 8))


def test_size_at_follows_the_schedule():
    schedule = [(0.0, 16), (0.4, 24), (0.7, 32)]
    assert [size_at(schedule, p, (32, 32))[0] for p in (0.0, 0.39, 0.4, 0.69, 0.7, 1.0)] == [16, 16, 24, 24, 32, 32]
    assert size_at(None, 0.5, (32, 32)) == (32, 32)


def test_schedule_trains_small_then_native_and_evaluates_native(tmp_path):
    cfg = tiny_config(tmp_path, *PROGRESSIVE)
    model = _model(cfg)
    shapes = _record_inputs(model)
    summary = train(cfg, model=model)
    sizes = [s[-1] for s in shapes]
    # 4 steps per epoch, 16 steps: the first half at 4 px, the rest at the model's own 8 px, in that order
    assert sizes == [4] * 8 + [8] * 8, sizes
    assert all(s[0] == 32 for s in shapes)  # constant batch by default
    assert summary["test_acc1"] is not None and summary["steps"] == 16


def test_scaled_batches_keep_pixels_per_step(tmp_path):
    cfg = tiny_config(tmp_path, *PROGRESSIVE, "data.size_schedule_batch=scale")
    model = _model(cfg)
    shapes = _record_inputs(model)
    summary = train(cfg, model=model)
    # at 4 px four loader batches of 32 join into one step of 128 (same pixels as 32 images at 8 px)
    small = [s for s in shapes if s[-1] == 4]
    assert small and all(s[0] == 128 for s in small), shapes
    assert all(s[0] == 32 for s in shapes if s[-1] == 8)
    assert sum(s[0] for s in shapes) == 4 * 128  # every image of the 4 epochs seen exactly once per epoch
    assert summary["steps"] == len(shapes) < 16


def test_scale_needs_a_schedule_and_no_accumulation(tmp_path):
    with pytest.raises(ConfigError, match="size_schedule_batch"):
        tiny_config(tmp_path, "data.size_schedule_batch=scale")
    with pytest.raises(ConfigError, match="accum_steps=2"):
        tiny_config(tmp_path, *PROGRESSIVE, "data.size_schedule_batch=scale", "train.accum_steps=2")
    with pytest.raises(ConfigError, match="data.size_schedule"):
        load_config(None, ["data.size_schedule=[[0.2, 16]]"])


def test_sizes_must_fit_the_patch(tmp_path):
    cfg = tiny_config(tmp_path, "data.size_schedule=[[0, 5]]")
    with pytest.raises(ValueError, match=r"sizes \[5\] are not multiples of the model's patch size 2"):
        train(cfg)


def test_time_budget_stops_the_run_and_drives_the_cosine(tmp_path):
    cfg = tiny_config(tmp_path, "train.epochs=100000", "train.time_budget_s=2", "schedule.min_lr_ratio=0",
                      "log.every_steps=1")
    summary = train(cfg)
    assert "time_budget_s=2" in summary["stop_reason"]
    assert 2.0 <= summary["train_time_s"] < 6.0
    records = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r.get("kind") == "step"]
    assert max(lrs) > 10 * lrs[-1]  # the cosine ran down with the clock, not with a step count
    epoch_records = [r for r in records if r.get("kind") == "epoch"]
    assert epoch_records[-1]["elapsed_s"] == pytest.approx(summary["train_time_s"], abs=0.5)


def test_resampling_keeps_a_trained_models_outputs_at_its_own_size(tmp_path):
    """Training at other sizes never rewrites the stored position embedding (it is resampled per call), so at the
    native size the dynamic model equals a fixed-size copy exactly; and an explicit resample there and back
    (set_input_size) keeps the trained model's predictions."""
    cfg = tiny_config(tmp_path, *PROGRESSIVE, "data.kwargs={num_samples: 256, image_size: 16, num_classes: 4}",
                      "data.size_schedule=[[0, 8], [0.5, 16]]")
    model = _model_at(cfg, 16)
    train(cfg, model=model)
    model.eval()
    x = torch.randn(64, 3, 16, 16)
    fixed = create_model("vit_digits_patch2_8", num_classes=4, in_chans=3, img_size=16, embed_dim=32, depth=2,
                         num_heads=2)
    fixed.load_state_dict(model.state_dict())
    fixed.eval()
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(fixed(x), ref)
        model.set_input_size(32)  # 8x8 grid -> 16x16 -> back to 8x8
        model.set_input_size(16)
        back = model(x)
    assert (back.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    assert float((back - ref).abs().max()) < 0.1 * float(ref.abs().max())


def _model_at(cfg, side: int):
    from vitkit.train.engine import build_model

    return build_model(cfg, num_classes=4, in_chans=3, img_size=(side, side))

"""The one training loop: equivalences between its switches, its outputs, and how it stops."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import vitkit
from tests.helpers.train import last_weights, max_abs_diff, tiny_config
from vitkit import create_model
from vitkit.train import NonFiniteLossError, train
from vitkit.train.config import ConfigError, load_config
from vitkit.train.engine import build_model

SGD = ["optim.name=sgd", "optim.momentum=0.0", "optim.lr=0.5", "optim.weight_decay=0.0", "optim.clip_grad_norm=null",
       "schedule.name=constant", "schedule.warmup_steps=0"]


def test_accumulation_4x8_equals_batch_32(tmp_path):
    """The same 32 images as one batch or four micro-batches of 8 give the same weights (no dropout)."""
    common = [*SGD, "train.max_steps=3", "train.deterministic=true"]
    full = train(tiny_config(tmp_path / "full", *common, "data.batch_size=32"))
    accum = train(tiny_config(tmp_path / "accum", *common, "data.batch_size=8", "train.accum_steps=4"))
    start = build_model(tiny_config(tmp_path), 4, 3, (8, 8)).state_dict()
    moved = max_abs_diff(last_weights(full["run_dir"]), start)
    assert moved > 1e-3  # the steps really changed the weights
    assert max_abs_diff(last_weights(full["run_dir"]), last_weights(accum["run_dir"])) < 1e-6


def test_short_last_accumulation_group_still_steps(tmp_path):
    """4 batches per epoch with accum 3: a full group and a short one, normalised by its own size."""
    summary = train(tiny_config(tmp_path, "train.accum_steps=3", "train.epochs=1"))
    assert summary["steps"] == 2 and summary["accum_steps"] == 3


def test_grad_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    model = vitkit.create_model("vit_digits_patch2_8", depth=2)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    grads = []
    for on in (False, True):
        model.set_grad_checkpointing(on)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_grad_checkpointing_switch_in_the_loop(tmp_path):
    common = [*SGD, "train.max_steps=2", "train.deterministic=true"]
    off = train(tiny_config(tmp_path / "off", *common))
    on = train(tiny_config(tmp_path / "on", *common, "train.grad_checkpointing=true"))
    assert max_abs_diff(last_weights(off["run_dir"]), last_weights(on["run_dir"])) == 0.0


def test_run_directory_outputs(tmp_path):
    summary = train(tiny_config(tmp_path, "log.tensorboard=true", "log.curves=true", "log.every_steps=1",
                                "log.block_grad_every=2", "train.ema=true", "checkpoint.keep_last=1"))
    run = Path(summary["run_dir"])
    from vitkit.viz.report import write_run_outputs  # the figures come from the command that ran the training

    assert write_run_outputs(run, curves=True, report=False) == [run / "curves.png"]
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "curves.png", "best.safetensors", "ema.safetensors",
                 "last.pt", "last-epoch0002.pt"):
        assert (run / name).is_file(), name
    assert not (run / "last-epoch0001.pt").exists()  # keep_last=1 keeps only the newest copy
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(steps) == summary["steps"] and len(epochs) == 2
    for key in ("train_loss", "lr", "grad_norm", "img_per_s", "data_wait", "mem_mb"):
        assert key in steps[0], key
    assert any("block_grad_norm" in r and "blocks.1" in r["block_grad_norm"] for r in steps)
    for key in ("val_acc1", "val_loss", "val_ema_acc1", "epoch_time_s", "train_acc1"):
        assert key in epochs[-1], key
    assert json.loads((run / "summary.json").read_text())["test_acc1"] == summary["test_acc1"]

    model = vitkit.load_checkpoint(run / "best.safetensors")
    extra = model.checkpoint_meta["extra"]
    assert extra["class_names"] == [f"class_{i}" for i in range(4)] and len(extra["mean"]) == 3
    assert model.num_classes == 4


def test_synthetic_run_learns(tmp_path):
    summary = train(tiny_config(tmp_path, "train.epochs=6", "optim.lr=3e-3"))
    assert summary["test_acc1"] > 60.0  # 4 classes: chance is 25%


def test_nonfinite_loss_stops_naming_the_step(tmp_path):
    class BreaksAtThirdCall(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            out = self.inner(x)
            return out * float("nan") if self.calls == 3 else out

    cfg = tiny_config(tmp_path, "train.epochs=3")
    model = BreaksAtThirdCall(build_model(cfg, 4, 3, (8, 8)))
    with pytest.raises(NonFiniteLossError, match=r"optimizer step 3 \(epoch 1, batch 3/4\)") as err:
        train(cfg, model=model)
    debug = next(tmp_path.glob("*/nonfinite-step3.pt"))
    assert str(debug) in str(err.value)
    state = torch.load(debug, weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_early_stopping(tmp_path):
    summary = train(tiny_config(tmp_path, "optim.lr=1e-12", "train.epochs=10", "train.early_stop_patience=2"))
    assert summary["stop_reason"].startswith("early stop") and summary["epochs"] == 3


def test_auto_batch_keeps_the_effective_batch(tmp_path):
    summary = train(tiny_config(tmp_path, "train.auto_batch=true", "train.cpu_batch_cap=10", "train.max_steps=1"))
    assert (summary["micro_batch"], summary["accum_steps"]) == (8, 4)  # largest divisor of 32 that is <= 10


@pytest.mark.parametrize("switch", ["train.precision=bf16", "model.token_keep_rate=0.5", "optim.layer_decay=0.7",
                                    "data.mixup_alpha=0.8", "train.label_smoothing=0.1", "schedule.name=step",
                                    "log.progress=bar", "data.pipeline=per_sample"])
def test_switches_train(tmp_path, switch):
    extra = {"data.mixup_alpha=0.8": ["data.cutmix_alpha=1.0"],
             "data.pipeline=per_sample": ["data.num_workers=0", "data.auto_augment=trivialaugment",
                                          "data.mixup_alpha=0.5", "data.scale_min=0.5"]}.get(switch, ["data.flip=true"])
    summary = train(tiny_config(tmp_path, switch, "train.max_steps=2", *extra))
    assert summary["steps"] == 2 and summary["test_acc1"] is not None


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        train(tiny_config(tmp_path, "train.precision=fp16", "train.device=cpu"))


def test_compile_matches_eager(tmp_path):
    """torch.compile of the model: same per-step losses as eager within a tolerance (slow on CPU, so 2 steps)."""
    common = ["train.max_steps=2", "log.every_steps=1", "model.kwargs={embed_dim: 16, depth: 1, num_heads: 2}"]
    eager = train(tiny_config(tmp_path / "eager", *common))
    compiled = train(tiny_config(tmp_path / "compiled", *common, "train.compile=true"))
    losses = []
    for s in (eager, compiled):
        lines = (Path(s["run_dir"]) / "metrics.jsonl").read_text()
        losses.append([json.loads(line)["train_loss"] for line in lines.splitlines()
                       if json.loads(line)["kind"] == "step"])
    assert len(losses[0]) == 2
    assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-5)


def test_channels_last_matches_the_default_layout(tmp_path):
    """train.channels_last changes only the memory layout of a conv stem: same losses, loadable weights."""
    common = ["train.max_steps=3", "log.every_steps=1", "model.name=vit_hybrid_conv_tiny_32",
              "model.kwargs={conv_channels: [8, 16], conv_strides: [1, 2], embed_dim: 16, depth: 1, num_heads: 2}"]
    runs = [train(tiny_config(tmp_path / name, *common, *extra))
            for name, extra in (("nchw", []), ("nhwc", ["train.channels_last=true"]))]
    losses = [[json.loads(line)["train_loss"] for line in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["kind"] == "step"] for s in runs]
    assert len(losses[0]) == 3
    assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-5)
    assert max_abs_diff(last_weights(runs[0]["run_dir"]), last_weights(runs[1]["run_dir"])) < 1e-4
    model = vitkit.load_checkpoint(Path(runs[1]["run_dir"]) / "best.safetensors")
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)


# Progressive resolution (data.size_schedule), batch scaling and time budgets

PROGRESSIVE = ["data.size_schedule=[[0, 4], [0.5, 8]]", "train.epochs=4"]  # 2x2 tokens for half the run, then 4x4


def _record_inputs(model: torch.nn.Module) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)) if _m.training else None)
    return shapes


def _model(cfg):
    from vitkit.train.engine import build_model

    return build_model(cfg, num_classes=4, in_chans=3, img_size=(8, 8))


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


def _train_in_background(tmp_path: Path, *sets: str):
    import os
    import subprocess
    import sys

    from tests.helpers.train import REPO, TINY, cli_sets

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "vitkit", "train", *cli_sets([*TINY, f"checkpoint.out_dir={tmp_path}",
                                                               "log.progress=plain", "log.every_steps=1", *sets])]
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_steps(proc, count: int) -> list[str]:
    lines = []
    while sum(" step " in line and "train_loss" in line for line in lines) < count:
        line = proc.stdout.readline()
        assert line, "training ended before it was interrupted:\n" + "".join(lines)
        lines.append(line)
    return lines


def test_ctrl_c_once_finishes_the_step_saves_and_says_how_to_resume(tmp_path):
    import signal

    from vitkit.train.checkpoint import load_train_state

    proc = _train_in_background(tmp_path, "train.epochs=200")  # far more than the test waits for
    _wait_for_steps(proc, 3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    run_dir = next(tmp_path.glob("vit_digits_patch2_8-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    state = load_train_state(run_dir / "last.pt")
    assert summary["stop_reason"] == "interrupted" and summary["steps"] == state["step"] >= 3
    assert f"vitkit train --resume {run_dir}" in out and "Traceback" not in out


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_twice_exits_at_once_and_keeps_the_last_checkpoint(tmp_path, inherited):
    """The second Ctrl-C lands while a step is still running (a step callback that takes 2 s), and ends the
    process there: no further step, no summary, the last checkpoint whole. Also in a process that started with
    SIGINT ignored (a background job; a pytest-xdist worker passes that on), which has no Python handler to restore."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers.train import REPO, TINY
    from vitkit.train.checkpoint import load_train_state

    driver = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGINT, signal.{'SIG_IGN' if inherited == 'ignored' else 'default_int_handler'})\n"
        "from vitkit.train import load_config, train\n"
        "def slow(state):\n"
        "    print('step', state.step, flush=True)\n"
        "    time.sleep(2 if state.step >= 2 else 0)\n"
        f"train(load_config(None, {[*TINY, f'checkpoint.out_dir={tmp_path}', 'checkpoint.every_steps=1', 'train.epochs=200']!r}),"
        " callbacks=[slow])\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    while proc.stdout.readline().strip() != "step 2":  # inside step 2's 2-second callback from here on
        assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "KeyboardInterrupt" in out, out[-2000:]
    run_dir = next(tmp_path.glob("vit_digits_patch2_8-*"))
    assert load_train_state(run_dir / "last.pt")["step"] == 2  # whole, and nothing after the second Ctrl-C
    assert not (run_dir / "summary.json").exists()


def test_the_final_test_pass_shows_progress(tmp_path, capsys):
    train(tiny_config(tmp_path, "log.progress=plain", "train.max_steps=1"))
    import re

    out = capsys.readouterr().out
    assert re.search(r"^test: (\d+)/\1 batches", out, re.M), out[-2000:]  # the last batch of the test split


def test_a_pretrained_start_prints_its_load_report(tmp_path, capsys):
    source = create_model("vit_digits_patch2_8", embed_dim=32, depth=2, num_heads=2, num_classes=10, img_size=16,
                          in_chans=3)
    path = vitkit.save_checkpoint(source, tmp_path / "start.safetensors")
    train(tiny_config(tmp_path, "log.progress=plain", "train.max_steps=1", f"model.pretrained={path}"))
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("pretrained: "))
    assert "Head replaced" in line and "10-class" in line and "8x8" in line and "4x4" in line, line

"""Exact resume after a hard kill mid-epoch, and checkpoint writes that survive a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.train import REPO, TINY, last_weights, run_killed, tiny_config
from vitkit.cli import main
from vitkit.train import train
from vitkit.train.checkpoint import load_train_state, resolve_resume, save_train_state

# Everything random is on: dropout, drop-path, crop/flip, mixup/cutmix, token dropout and EMA, so any RNG state
# or data position that resume failed to restore changes the final weights.
RANDOM_EVERYTHING = [
    "train.deterministic=true", "train.epochs=3", "train.accum_steps=2", "data.batch_size=16", "train.ema=true",
    "data.crop_padding=1", "data.flip=true", "data.mixup_alpha=0.4", "data.cutmix_alpha=1.0",
    "model.drop_path_rate=0.1", "model.drop_rate=0.1", "model.token_keep_rate=0.75", "train.label_smoothing=0.1",
    "log.every_steps=1",
]


def test_resume_after_kill_mid_epoch_is_bitwise_identical(tmp_path, capsys):
    # 128 images / 16 = 8 batches, accum 2 -> 4 optimizer steps per epoch, 12 in all.
    # Saves every 3 steps; the process is SIGKILLed after step 7, so it resumes from step 6 (epoch 2,
    # batch 4 of 8: mid-epoch) and must redo step 7 exactly.
    sets = [*TINY, *RANDOM_EVERYTHING, "checkpoint.every_steps=3", f"checkpoint.out_dir={tmp_path / 'crashed'}"]
    crashed = run_killed(7, sets, tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    run_dir = next((tmp_path / "crashed").iterdir())
    state = load_train_state(run_dir / "last.pt")
    assert (state["step"], state["epoch"], state["loader"]["batches_done"]) == (6, 1, 4)

    # the stored config.yaml is reused (in this process: only the kill needed one of its own)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "test accuracy" in capsys.readouterr().out

    straight = train(tiny_config(tmp_path / "straight", *RANDOM_EVERYTHING))
    a, b = last_weights(run_dir), last_weights(straight["run_dir"])
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    ema_a = load_train_state(run_dir / "last.pt")["ema"]
    ema_b = load_train_state(Path(straight["run_dir"]) / "last.pt")["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert (run_dir / "summary.json").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 13))  # step 7 logged once


def test_resume_auto_finds_the_newest_run(tmp_path):
    first = train(tiny_config(tmp_path, "train.max_steps=2", "checkpoint.run_name=exp"))
    assert resolve_resume("auto", tmp_path, "exp") == Path(first["run_dir"]) / "last.pt"
    # continue the same run to the end of its 2 epochs (8 steps), with a raised step budget
    cont = train(tiny_config(tmp_path, "checkpoint.run_name=exp", "checkpoint.resume=auto"))
    assert cont["run_dir"] == first["run_dir"] and cont["steps"] == 8
    with pytest.raises(FileNotFoundError, match="no .*nothing-\\*/last.pt"):
        resolve_resume("auto", tmp_path, "nothing")


def test_resume_refuses_a_different_batch_geometry(tmp_path):
    first = train(tiny_config(tmp_path, "train.max_steps=2"))
    with pytest.raises(ValueError, match="accum_steps"):
        train(tiny_config(tmp_path, "train.accum_steps=2", f"checkpoint.resume={first['run_dir']}"))


_SAVER = """
import sys, torch
from vitkit.train.checkpoint import save_train_state
path, i = sys.argv[1], 0
while True:
    i += 1
    save_train_state(path, {"i": i, "big": torch.full((4_000_000,), float(i))})  # 16 MB per write
    print(i, flush=True)
"""


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process that saves over the same file in a loop: the file is always a complete old version."""
    path = tmp_path / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        for _ in range(3):  # wait for a few completed saves, then kill at an arbitrary moment of the next
            proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_train_state(path)
    assert state["i"] >= 3 and torch.equal(state["big"], torch.full((4_000_000,), float(state["i"])))


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    """A write that dies halfway (here: an exception after half the bytes) never replaces the previous file."""
    path = tmp_path / "last.pt"
    save_train_state(path, {"i": 1})

    def dies_halfway(obj, f):  # f: the open temporary file
        f.write(b"\x80\x02half a pickle")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_train_state(path, {"i": 2})
    monkeypatch.undo()
    assert load_train_state(path)["i"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_training_state_is_weights_only_loadable(tmp_path):
    summary = train(tiny_config(tmp_path, "train.max_steps=1", "train.ema=true"))
    state = torch.load(Path(summary["run_dir"]) / "last.pt", weights_only=True)  # raises on any pickled object
    assert isinstance(state["rng"]["torch"], torch.Tensor) and isinstance(state["rng"]["augment"], torch.Tensor)
    with pytest.raises(ValueError, match="not a vitkit training state"):
        save_train_state(tmp_path / "other.pt", {})
        torch.save({"x": 1}, tmp_path / "other.pt")
        load_train_state(tmp_path / "other.pt")


class _Stop(Exception):
    """Raised by a step callback: the run stops right there, as a killed process would (nothing saved after)."""


def _stop_after(step: int):
    def callback(state) -> None:
        if state.step >= step:
            raise _Stop

    return callback


def _epoch_records(run_dir) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "epoch"]


def test_extending_a_finished_run_trains_the_extra_epochs(tmp_path):
    first = train(tiny_config(tmp_path, "train.epochs=2"))  # 4 steps per epoch
    assert first["steps"] == 8
    more = train(tiny_config(tmp_path, "train.epochs=3", f"checkpoint.resume={first['run_dir']}"))
    assert more["run_dir"] == first["run_dir"] and more["steps"] == 12 and more["epochs"] == 3
    records = _epoch_records(first["run_dir"])
    assert [r["step"] for r in records] == [4, 8, 12]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records)


def test_resumed_epoch_reports_all_of_its_batches(tmp_path):
    sets = ["train.deterministic=true", "checkpoint.every_steps=1"]
    with pytest.raises(_Stop):  # stops after step 2 of epoch 1's 4: last.pt holds the first half of its sums
        train(tiny_config(tmp_path / "cut", *sets), callbacks=[_stop_after(2)])
    run_dir = next((tmp_path / "cut").iterdir())
    train(tiny_config(tmp_path / "cut", *sets, f"checkpoint.resume={run_dir}"))
    straight = train(tiny_config(tmp_path / "straight", *sets))
    resumed, whole = _epoch_records(run_dir), _epoch_records(straight["run_dir"])
    assert len(resumed) == len(whole) == 2
    for a, b in zip(resumed, whole):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["train_acc1"] == pytest.approx(b["train_acc1"], rel=1e-9)


def test_resume_auto_never_continues_an_older_run_in_place_of_the_newest(tmp_path):
    finished = train(tiny_config(tmp_path, "train.max_steps=2", "checkpoint.run_name=exp"))
    config_before = (Path(finished["run_dir"]) / "config.yaml").read_text()
    newest = tmp_path / "exp-29991231-235959"  # a newer run that died before its first checkpoint
    newest.mkdir()
    os.utime(newest, (time.time() + 60, time.time() + 60))
    with pytest.raises(FileNotFoundError, match="newest run .*exp-29991231-235959 has no last.pt"):
        train(tiny_config(tmp_path, "checkpoint.run_name=exp", "checkpoint.resume=auto", "optim.lr=5e-4"))
    assert (Path(finished["run_dir"]) / "config.yaml").read_text() == config_before


def test_resume_with_a_changed_config_names_the_keys_and_touches_nothing(tmp_path):
    first = train(tiny_config(tmp_path, "train.max_steps=2"))
    run_dir = Path(first["run_dir"])
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "last.pt")}
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.002 -> 0\.0005.*a resume may change only"):
        train(tiny_config(tmp_path, "optim.lr=5e-4", f"checkpoint.resume={run_dir}"))
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_resume_removes_stale_temporaries_of_a_killed_writer(tmp_path):
    first = train(tiny_config(tmp_path, "train.max_steps=2"))
    run_dir = Path(first["run_dir"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [run_dir / f".last.pt.{dead.stdout.strip()}.abc123.tmp",
             run_dir / f".best.safetensors.{dead.stdout.strip()}.x1y2z3.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    train(tiny_config(tmp_path, f"checkpoint.resume={run_dir}"))
    assert not any(path.exists() for path in stale)
    assert not list(run_dir.glob(".*.tmp"))


def test_a_full_disk_stops_the_run_with_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from vitkit.train import engine
    from vitkit.utils.fileio import DiskFullError

    real_save = engine.save_train_state
    calls = []

    def fills_the_disk(path, state):  # the second save of last.pt finds no space left
        calls.append(path)
        if len(calls) == 2:
            raise DiskFullError(f"no space left on the device writing {path} (0.0 MiB free on {path.parent}); "
                                f"the previous {path.name} is kept")
        return real_save(path, state)

    monkeypatch.setattr(engine, "save_train_state", fills_the_disk)
    with pytest.raises(DiskFullError, match="no space left on the device writing .*last.pt"):
        train(tiny_config(tmp_path, "checkpoint.every_steps=1"))
    assert load_train_state(calls[0])["step"] == 1  # the previous checkpoint is whole

"""kill -9 a training run at random points and resume it: does every resume end bit-identical to the uninterrupted
run, is the last good checkpoint always whole, and is no temporary file left behind?

Two kinds of trial, each killing a training process with SIGKILL (nothing flushed or cleaned up) and then continuing
it the way a user would, ``vitkit train --resume <run>`` in a new process. The processes are forked from this one
once it has imported vitkit (nothing trained in it): a fresh interpreter per process would spend most of a trial
importing torch.

- step kills: the process kills itself right after optimizer step K (K drawn per trial), through the loop's step
  callback;
- write kills: the process kills itself in the middle of writing ``last.pt`` (inside ``torch.save``, after B bytes)
  or ``best.safetensors`` (after B bytes of the file reached the disk), at the N-th write of that file (N and B drawn
  per trial), so the kill always lands while a checkpoint is half-written.

Per trial it records: whether the files a killed run leaves (``last.pt``, ``best.safetensors``, ``ema.safetensors``)
are each byte-for-byte the last write that completed before the kill and load (last good checkpoint intact); whether
the resumed run's final weights, EMA weights, best weights and test accuracy equal the reference run's bit for bit;
and how many temporary files (``.<name>.<pid>.<random>.tmp``) are in the output folder after the resume (the engine
removes those of dead writers). A journal written by the training process after each completed checkpoint write
says what "the last good checkpoint" is. Every trial's seed (its kill point is drawn from it) is recorded with its
result. The training: a tiny ViT on scikit-learn digits (or synthetic data), deterministic, with dropout,
drop-path, token dropout, crop, MixUp/CutMix, label smoothing and EMA all on, so any random stream or data position a
resume failed to restore changes the weights.

    python benchmarks/faults.py [--trials 20] [--write-trials 10] [--seed 0] [--data digits|synthetic] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: a forked child inherits no OpenMP pool

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "faults.json"
CHECKPOINT_FILES = ("last.pt", "best.safetensors", "ema.safetensors")
WRITE_TARGETS = ("last.pt", "best.safetensors")
#: an atomic write's temporary (vitkit.utils.fileio: ``.<name>.<pid>.<random>.tmp``, the cache's ``.building.npy``)
TEMPORARY = re.compile(r"^\..+\.(tmp|building\.npy)$")

# Everything random is on, so a random stream or data position that a resume failed to restore shows in the weights.
TRAINING = [
    "train.deterministic=true", "train.threads=1", "train.epochs=2", "train.accum_steps=2", "data.batch_size=64",
    "model.kwargs={embed_dim: 32, depth: 2, num_heads: 2}", "model.drop_path_rate=0.1", "model.drop_rate=0.1",
    "model.token_keep_rate=0.75", "data.crop_padding=1", "data.mixup_alpha=0.4", "data.cutmix_alpha=1.0",
    "train.label_smoothing=0.1", "train.ema=true", "schedule.warmup_steps=2", "checkpoint.every_steps=3",
    "log.every_steps=1", "log.progress=none", "log.tensorboard=false", "log.curves=false", "log.report=false",
]
DATA = {
    "digits": ["data.name=digits"],
    "synthetic": ["data.name=synthetic", "data.kwargs={num_samples: 256, image_size: 8, num_classes: 4}",
                  "data.val_fraction=0", "model.name=vit_digits_patch2_8"],
}


# --- the training process: journals every completed checkpoint write, dies as told ----------------------------


class _DyingWriter:
    """The file ``torch.save`` writes to: after ``limit`` bytes the process SIGKILLs itself, mid-write."""

    def __init__(self, inner, limit: int) -> None:
        self.inner, self.limit, self.written = inner, limit, 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        room = self.limit - self.written
        if len(data) >= room:
            self.inner.write(bytes(data[:room]))
            self.inner.flush()  # into the page cache, which outlives the process: what a kill leaves on disk
            os.kill(os.getpid(), signal.SIGKILL)
        self.written += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _install_journal(journal_path: Path) -> None:
    """After each completed write of last.pt or a .safetensors: one line with its name, step, size and hash."""
    import vitkit.weights
    from vitkit.train import engine

    journal = open(journal_path, "a")  # noqa: SIM115 - open for the life of the process, which is killed

    def record(path, step) -> None:
        path = Path(path)
        journal.write(json.dumps({"file": path.name, "step": step, "bytes": path.stat().st_size,
                                  "sha256": _sha256(path)}) + "\n")
        journal.flush()

    real_state, real_checkpoint = engine.save_train_state, vitkit.weights.save_checkpoint

    def save_train_state(path, state):
        out = real_state(path, state)
        record(path, state["step"])
        return out

    def save_checkpoint(model, path, metadata=None):
        out = real_checkpoint(model, path, metadata=metadata)
        record(path, (metadata or {}).get("step"))
        return out

    engine.save_train_state = save_train_state
    vitkit.weights.save_checkpoint = save_checkpoint  # Trainer.save_weights imports it when it saves


def _install_write_kill(name: str, nth: int, limit: int) -> None:
    """SIGKILL this process after ``limit`` bytes of the ``nth`` write of ``name`` (last.pt or a .safetensors)."""
    writes = 0
    if name == "last.pt":
        from vitkit.train import checkpoint

        real_target = checkpoint.torch_save_target

        @contextlib.contextmanager
        def torch_save_target(tmp: Path):
            nonlocal writes
            with real_target(tmp) as writer:
                if tmp.name.startswith(f".{name}."):
                    writes += 1
                    if writes == nth:
                        writer = _DyingWriter(writer, limit)
                yield writer

        checkpoint.torch_save_target = torch_save_target
        return
    import safetensors.torch

    from vitkit.weights import io

    real_save_file = io.save_file

    def save_file(tensors, filename, metadata=None):
        nonlocal writes
        if Path(filename).name.startswith(f".{name}."):
            writes += 1
            if writes == nth:  # the bytes safetensors would write, cut where the kill lands
                data = safetensors.torch.save(tensors, metadata=metadata)
                with open(filename, "wb") as fh:
                    fh.write(data[:limit])
                    fh.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        return real_save_file(tensors, filename, metadata=metadata)

    io.save_file = save_file


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="training process", description="one training process of a trial")
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--die-after-step", type=int)
    parser.add_argument("--die-in-write", metavar="FILE:N:BYTES", help="die after BYTES bytes of the N-th write of FILE")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    from vitkit.train import load_config, train

    _install_journal(args.journal)
    if args.die_in_write:
        name, nth, limit = args.die_in_write.split(":")
        _install_write_kill(name, int(nth), int(limit))

    def die(state) -> None:
        if args.die_after_step is not None and state.step >= args.die_after_step:
            os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(None, args.set), callbacks=[die])


# --- the trials -----------------------------------------------------------------------------------------------


def _forked(log: Path, fn, *args) -> int:
    """Run ``fn(*args)`` in a forked process with stdout and stderr in ``log``; its exit code (-9: SIGKILLed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's code
        code = 1
        try:
            with open(log, "w") as fh:
                os.dup2(fh.fileno(), 1)
                os.dup2(fh.fileno(), 2)
            fn(*args)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        except BaseException:  # noqa: BLE001 - the log says what; the exit code says that it failed
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _train_child(workdir: Path, training: list[str], fault: list[str]) -> tuple[int, str]:
    log = workdir / "train.log"
    args = ["--journal", str(workdir / "journal.jsonl"), *fault,
            *[arg for item in [*training, f"checkpoint.out_dir={workdir / 'out'}"] for arg in ("--set", item)]]
    return _forked(log, child, args), log.read_text()


def _resume(workdir: Path, run_dir: Path) -> tuple[int, str]:
    """``vitkit train --resume <run>``: the stored config.yaml, nothing else."""
    from vitkit.cli import main as vitkit_main

    log = workdir / "resume.log"
    return _forked(log, lambda: sys.exit(vitkit_main(["train", "--resume", str(run_dir)]))), log.read_text()


def _run_dir(workdir: Path) -> Path:
    runs = [p for p in (workdir / "out").iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise RuntimeError(f"expected one run directory in {workdir / 'out'}, found {runs}")
    return runs[0]


def _journal(workdir: Path) -> list[dict]:
    path = workdir / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if TEMPORARY.match(p.name))


def _last_good_checkpoint(run_dir: Path, journal: list[dict]) -> tuple[bool, list[str]]:
    """Whether each checkpoint file on disk is the last write of it that completed, whole and loadable."""
    import vitkit
    from vitkit.train.checkpoint import load_train_state

    last = {entry["file"]: entry for entry in journal}
    problems = []
    for name in CHECKPOINT_FILES:
        path, entry = run_dir / name, last.get(name)
        if entry is None:
            if path.exists():
                problems.append(f"{name} exists but no write of it completed")
            continue
        if not path.is_file():
            problems.append(f"{name} (written at step {entry['step']}) is gone")
            continue
        if _sha256(path) != entry["sha256"]:
            problems.append(f"{name} is not its last complete write (step {entry['step']})")
            continue
        try:
            if name.endswith(".pt"):
                step = load_train_state(path)["step"]
                if step != entry["step"]:
                    problems.append(f"{name} holds step {step}, its last complete write was step {entry['step']}")
            else:
                vitkit.load_checkpoint(path)
        except Exception as err:  # any failure to load is the finding
            problems.append(f"{name} does not load: {err}")
    return not problems, problems


def _final_state(run_dir: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"model": state["model"], "ema": state["ema"], "best": load_file(str(run_dir / "best.safetensors")),
            "test_acc1": summary["test_acc1"], "steps": summary["steps"]}


def _same(a: dict, b: dict) -> dict[str, bool]:
    import torch

    def equal(x: dict, y: dict) -> bool:
        return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

    return {"weights": equal(a["model"], b["model"]), "ema": equal(a["ema"], b["ema"]),
            "best": equal(a["best"], b["best"]), "test_acc1": a["test_acc1"] == b["test_acc1"],
            "steps": a["steps"] == b["steps"]}


def run_trial(workdir: Path, training: list[str], fault: list[str], reference: dict) -> dict:
    """Kill a fresh run as ``fault`` says, check what it left, resume it, compare with ``reference``."""
    t0 = time.perf_counter()
    code, log = _train_child(workdir, training, fault)
    row: dict = {"killed_returncode": code}
    if code != -signal.SIGKILL:
        row["error"] = f"the training process was not killed (exit code {code}): {log[-2000:]}"
        return row
    run_dir = _run_dir(workdir)
    journal = _journal(workdir)
    row["last_complete_write"] = journal[-1]["file"] if journal else None
    row["temporaries_after_kill"] = len(_temporaries(workdir / "out"))
    row["last_checkpoint_intact"], row["intact_problems"] = _last_good_checkpoint(run_dir, journal)
    resume_steps = [e["step"] for e in journal if e["file"] == "last.pt"]
    row["resumed_from_step"] = resume_steps[-1] if resume_steps else None
    code, log = _resume(workdir, run_dir)
    row["resume_returncode"] = code
    if code != 0:
        row["error"] = f"the resume failed: {log[-2000:]}"
        row["resumed_bit_identical"] = False
    else:
        row["equal"] = _same(_final_state(run_dir), reference)
        row["resumed_bit_identical"] = all(row["equal"].values())
    row["temporaries_left"] = _temporaries(workdir / "out")
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _summarise(rows: list[dict]) -> dict:
    return {"trials": len(rows), "resumed_bit_identical": sum(bool(r.get("resumed_bit_identical")) for r in rows),
            "last_checkpoint_intact": sum(bool(r.get("last_checkpoint_intact")) for r in rows),
            "stale_temporaries_left": sum(len(r.get("temporaries_left", ())) for r in rows),
            "errors": sum("error" in r for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="kills after a random optimizer step")
    parser.add_argument("--write-trials", type=int, default=10,
                        help="kills in the middle of a write of last.pt or best.safetensors (alternately)")
    parser.add_argument("--seed", type=int, default=0, help="draws every trial's seed, which draws its kill point")
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", type=Path, default=None, help="keep every trial's folder under this folder")
    args = parser.parse_args(argv)
    for name in ("trials", "write_trials"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    from vitkit.runtime import machine_info
    from vitkit.utils.fileio import atomic_write_text

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import load

    training = [*TRAINING, *DATA[args.data]]
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vitkit-faults-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        ref_dir = work / "reference"
        ref_dir.mkdir()
        code, log = _train_child(ref_dir, training, [])
        if code != 0:
            print(f"error: the reference run failed:\n{log[-4000:]}", file=sys.stderr)
            return 1
        reference, ref_journal = _final_state(_run_dir(ref_dir)), _journal(ref_dir)
        total_steps = reference["steps"]
        writes = {name: [e for e in ref_journal if e["file"] == name] for name in WRITE_TARGETS}
        first_save = min(e["step"] for e in writes["last.pt"])
        print(f"reference: {total_steps} optimizer steps, writes {({k: len(v) for k, v in writes.items()})}, "
              f"{time.perf_counter() - t_start:.1f} s", flush=True)

        master = np.random.default_rng(args.seed)
        seeds = [int(s) for s in master.integers(0, 2**31 - 1, size=args.trials + args.write_trials)]
        groups: dict[str, list[dict]] = {"step_kills": [], "write_kills": []}
        for i, seed in enumerate(seeds):
            rng = np.random.default_rng(seed)
            if i < args.trials:  # from the first last.pt on: before it there is nothing to resume
                step = int(rng.integers(first_save, total_steps + 1))
                row, fault, group = {"seed": seed, "kill_after_step": step}, ["--die-after-step", str(step)], \
                    "step_kills"
            else:
                name = WRITE_TARGETS[(i - args.trials) % len(WRITE_TARGETS)]
                # last.pt: from its second write on (a kill in the first leaves no last.pt to resume from)
                nth = int(rng.integers(2 if name == "last.pt" else 1, len(writes[name]) + 1))
                size = writes[name][nth - 1]["bytes"]
                cut = int(rng.integers(1, size))
                row = {"seed": seed, "kill_in_write_of": name, "write_number": nth, "kill_at_byte": cut,
                       "file_bytes": size}
                fault, group = ["--die-in-write", f"{name}:{nth}:{cut}"], "write_kills"
            trial_dir = work / f"trial{i:03d}"
            trial_dir.mkdir()
            row.update(run_trial(trial_dir, training, fault, reference))
            groups[group].append(row)
            verdict = "ok" if row.get("resumed_bit_identical") and row.get("last_checkpoint_intact") and \
                not row.get("temporaries_left") else "FAILED"
            print(f"trial {i + 1}/{len(seeds)} {group} {json.dumps({k: row[k] for k in list(row)[:5]})}: {verdict} "
                  f"({row.get('seconds', 0):.1f} s)", flush=True)
            if args.keep is None:
                shutil.rmtree(trial_dir, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    machine = machine_info()  # after the trials: it asks torch about threads, which forked children must not inherit
    totals = _summarise(groups["step_kills"] + groups["write_kills"])
    result = {
        "benchmark": "faults",
        "what": "kill -9 of a training run at random optimizer steps and in the middle of checkpoint writes, then "
                "`vitkit train --resume <run>` in a new process; compared with one uninterrupted run",
        "goal": "every resume bit-identical, every last good checkpoint intact, 0 stale temporaries",
        "met": totals["resumed_bit_identical"] == totals["trials"] == totals["last_checkpoint_intact"]
        and totals["stale_temporaries_left"] == 0 and totals["errors"] == 0,
        "totals": totals,
        "step_kills": {**_summarise(groups["step_kills"]), "rows": groups["step_kills"]},
        "write_kills": {**_summarise(groups["write_kills"]), "rows": groups["write_kills"]},
        "reference": {"optimizer_steps": total_steps, "test_acc1": reference["test_acc1"],
                      "writes": {name: [{k: e[k] for k in ("step", "bytes")} for e in v] for name, v in writes.items()},
                      "first_last_pt_step": first_save},
        "seed": args.seed, "data": args.data, "training": training,
        "seconds": round(time.perf_counter() - t_start, 1), "load_average_end": load(),
        "date_utc": machine["date_utc"], "command": machine["command"], "machine": machine,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"{totals['trials']} trials: {totals['resumed_bit_identical']} resumed bit-identical, "
          f"{totals['last_checkpoint_intact']} last good checkpoint intact, {totals['stale_temporaries_left']} stale "
          f"temporaries left, {totals['errors']} errors -> {args.out}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training state on disk: ``last.pt`` (everything needed to continue bit for bit) and run-directory lookup.

``last.pt`` is written with ``torch.save`` through an atomic rename, so a kill during a save leaves the previous file,
and read with ``torch.load(weights_only=True)``, so it may hold only tensors, containers and primitives: the RNG
states are stored as tensors / lists of ints, never as pickled objects.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.fileio import atomic_path, load_weights_only, torch_save_target

STATE_VERSION = 2


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random stream a training step draws from: torch (CPU, CUDA), numpy, Python, and the augmentation's."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["augment"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "augment" in state:
        generator.set_state(state["augment"])


def save_train_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write a training state (temp file + fsync + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp, torch_save_target(tmp) as fh:
        torch.save({"version": STATE_VERSION, **state}, fh)
    return path


def load_train_state(path: str | Path) -> dict[str, Any]:
    state = load_weights_only(path, "vitkit training state")
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"{path} is not a vitkit training state (version {STATE_VERSION} expected)")
    return state


def keep_history(run_dir: Path, epoch: int, keep: int) -> None:
    """Copy last.pt to last-epoch<N>.pt and drop the oldest copies beyond ``keep``."""
    if keep <= 0:
        return
    src = run_dir / "last.pt"
    with atomic_path(run_dir / f"last-epoch{epoch:04d}.pt") as tmp:
        shutil.copyfile(src, tmp)
    for old in sorted(run_dir.glob("last-epoch*.pt"))[:-keep]:
        old.unlink()


#: config keys a resume may change: how long to train, how to log and save, where to find things; anything else
#: (the model, data, optimizer, schedule, batch geometry, seed, precision) would make it a different run
RESUMABLE_KEYS = ("train.epochs", "train.max_steps", "train.time_budget_s", "train.threads", "data.num_workers",
                  "data.cache_dir", "checkpoint.resume", "checkpoint.out_dir", "checkpoint.every_steps",
                  "checkpoint.keep_last", "log.")


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and not prefix:  # sections; a section's dict values (kwargs) compare whole
            out.update(_flat(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved value, new value)}`` for every config key that differs, as dotted names. A key the saved config
    does not have (one added to vitkit after the run was saved) takes its default and is not a change."""
    old, new = _flat(saved), _flat(now)
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys()) if old.get(k) != new.get(k)}


def check_resume_config(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Refuse to resume ``path`` with a config that changes more than RESUMABLE_KEYS; returns the allowed changes."""
    from .config import ConfigError

    changes = config_changes(saved, now)
    refused = {k: v for k, v in changes.items() if not k.startswith(RESUMABLE_KEYS)}
    if refused:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise ConfigError(f"cannot resume {path} with a different config ({listed}); a resume may change only "
                          f"{', '.join(RESUMABLE_KEYS)}*: start a new run instead")
    return changes


def resolve_resume(resume: str, out_dir: str | Path, run_name: str) -> Path:
    """A last.pt path from ``resume``: a file, a run directory, or 'auto' (the newest ``<out_dir>/<run_name>-*/``).

    'auto' takes the newest run directory or nothing: when that run stopped before its first checkpoint, an older
    run is not silently continued in its place.
    """
    if resume == "auto":
        runs = sorted((p for p in Path(out_dir).glob(f"{run_name}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"--resume auto: no {out_dir}/{run_name}-*/last.pt to resume from (no such run)")
        if not (runs[-1] / "last.pt").is_file():
            raise FileNotFoundError(f"--resume auto: the newest run {runs[-1]} has no last.pt (it stopped before its "
                                    f"first checkpoint); pass --resume <run directory> to continue another run")
        return runs[-1] / "last.pt"
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint.resume: no training state at {path}")
    return path


__all__ = ["capture_rng", "restore_rng", "save_train_state", "load_train_state", "keep_history", "resolve_resume",
           "config_changes", "check_resume_config", "RESUMABLE_KEYS"]

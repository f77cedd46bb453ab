"""A Hugging Face Hub cache on disk, laid out as huggingface_hub writes it, for tests that load repos by name offline.

huggingface_hub resolves ``hf_hub_download(repo, file)`` without the network (HF_HUB_OFFLINE=1) by reading
``<cache>/models--<org>--<name>/refs/<branch>`` (a commit hash) and returning
``<cache>/models--<org>--<name>/snapshots/<hash>/<file>``; the snapshot files are links to ``blobs/<sha256>``.
``use_offline_cache`` points huggingface_hub at an empty temporary cache and forbids the network; ``put_in_cache``
copies a folder written by timm's ``save_for_hf`` or transformers' ``save_pretrained`` into it as one repo.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT, branch: str = "main") -> Path:
    """Add every file of ``folder`` as repo ``repo_id`` at ``commit``, with ``refs/<branch>`` naming it."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snapshot / file.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / branch).write_text(commit)
    return snapshot


def use_offline_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty hub cache that huggingface_hub uses for this test, with the network off (HF_HUB_OFFLINE=1).

    The environment is set for subprocesses; huggingface_hub read it into ``constants`` when first imported, so the
    same values are patched there too.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache

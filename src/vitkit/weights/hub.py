"""Files of Hugging Face Hub repositories, fetched by ``huggingface_hub``.

vitkit downloads nothing itself: every file comes from ``huggingface_hub.hf_hub_download``, so its cache and its
settings apply unchanged (``HF_HOME`` / ``HF_HUB_CACHE`` for the cache folder, ``HF_HUB_OFFLINE=1`` for cache-only
runs, ``HF_TOKEN`` or ``hf auth login`` for private and gated repos, ``repo@revision`` for a branch, tag or commit).
What the hub's answers mean for a user is translated here into one error naming the repo, the file, the cache folder
and the fix. huggingface_hub is imported only when a repo is asked for, so ``import vitkit`` stays light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HUB_PREFIX = "hf-hub:"  # timm's spelling of "this name is a hub repo": create_model("hf-hub:timm/...")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # safetensors first; the pickle is read weights-only
CONFIG_FILE = "config.json"

# huggingface_hub's repo id rule: "namespace/name", letters, digits, "-", "_", "."; an optional "@revision"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?")


class PretrainedNotCachedError(FileNotFoundError):
    """A hub file is not in the local cache and the hub could not be asked (offline, or unreachable)."""


class HubRepoError(ValueError):
    """The hub answered: no such repo or revision, a gated or private repo, or a repo without the file vitkit needs."""


@dataclass(frozen=True)
class HubRepo:
    """A model repository on the hub and the revision to read (None: the default branch)."""

    repo_id: str
    revision: str | None = None
    # how the repo was read from a user's string, when that was a guess (told in any error about it)
    note: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def is_hub_id(text: str) -> bool:
    """``hf-hub:<anything>`` or a bare ``namespace/name[@revision]`` (callers check local paths first)."""
    return text.startswith(HUB_PREFIX) or bool(_REPO_ID.fullmatch(text))


def parse_hub_id(text: str, note: str = "") -> HubRepo:
    """``'hf-hub:timm/vit_base_patch16_224.augreg_in21k@main'`` -> HubRepo('timm/vit_...', 'main')."""
    bare = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
    repo_id, _, revision = bare.partition("@")
    if not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"{text!r} is not a Hugging Face Hub repo id (expected 'namespace/name', e.g. "
                         "'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k', optionally '@revision')")
    return HubRepo(repo_id, revision or None, note)


def cache_folder() -> Path:
    """The folder huggingface_hub caches into now (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _not_cached(repo: HubRepo, filename: str, cause: BaseException | None) -> PretrainedNotCachedError:
    from huggingface_hub import constants

    why = ("HF_HUB_OFFLINE is set, so the hub was not asked" if constants.HF_HUB_OFFLINE else
           f"the hub could not be reached ({cause.__cause__ or cause}; HF_HUB_OFFLINE=1 skips asking it)"
           if cause is not None else "the hub could not be reached")
    return PretrainedNotCachedError(_noted(repo,
        f"{repo}: {filename} is not in the Hugging Face cache ({cache_folder()}) and {why}. Fix: run once online "
        f"(or `hf download {repo.repo_id}`{f' --revision {repo.revision}' if repo.revision else ''}) to fill the "
        f"cache, point HF_HOME / HF_HUB_CACHE at a cache that holds it, or pass a local weight file instead"
    ))


def _noted(repo: HubRepo, message: str) -> str:
    return f"{message} ({repo.note})" if repo.note else message


def _hub_error(repo: HubRepo, err: BaseException) -> Exception | None:
    """The hub's HTTP answers that are the user's to fix, as one HubRepoError; None for anything else."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(err, GatedRepoError):
        return HubRepoError(_noted(repo, f"{repo} is a gated repo: accept its terms on the hub, then log in "
                                         "(`hf auth login` or HF_TOKEN) with that account"))
    if isinstance(err, RepositoryNotFoundError):
        return HubRepoError(_noted(repo, f"{repo}: no such repo on the Hugging Face Hub, or it is private (check "
                                         "the name; for a private repo log in with `hf auth login` or set HF_TOKEN)"))
    if isinstance(err, RevisionNotFoundError):
        return HubRepoError(f"{repo}: the repo has no revision {repo.revision!r} (a branch, tag or commit hash)")
    return None


def _download(repo: HubRepo, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo.repo_id, filename, revision=repo.revision, library_name="vitkit",
                                library_version=_version()))


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitkit")
    except PackageNotFoundError:
        return None


def hub_file(repo: HubRepo, filename: str) -> Path:
    """The local path of one file of the repo, downloaded into (or read from) huggingface_hub's cache."""
    return first_hub_file(repo, (filename,))


def first_hub_file(repo: HubRepo, filenames: tuple[str, ...]) -> Path:
    """The first of ``filenames`` the repo has (in that order of preference), as a local path.

    Offline, a file missing from the cache may still exist on the hub, so the next one is tried from the cache;
    when none is cached the error names the first (preferred) file.
    """
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    not_cached: LocalEntryNotFoundError | None = None
    for filename in filenames:
        try:
            return _download(repo, filename)
        except LocalEntryNotFoundError as err:
            not_cached = not_cached or err
        except EntryNotFoundError:  # the hub answered: no such file in this repo
            continue
        except Exception as err:  # repo not found, gated, bad revision: the user's to fix; anything else propagates
            known = _hub_error(repo, err)
            if known is None:
                raise
            raise known from None
    if not_cached is not None:
        raise _not_cached(repo, filenames[0], not_cached)
    raise HubRepoError(f"{repo} has none of {', '.join(filenames)}")


def optional_hub_file(repo: HubRepo, filename: str) -> Path | None:
    """A file the load can do without (preprocessor_config.json, README.md): None when absent or not cached."""
    try:
        return hub_file(repo, filename)
    except (PretrainedNotCachedError, HubRepoError):
        return None


def license_from_model_card(text: str) -> str | None:
    """The ``license:`` of a model card's YAML front matter (README.md); ``other`` defers to ``license_name``."""
    match = re.match(r"\A---\s*\n(.*?)\n---", text, re.S)
    if not match:
        return None
    fields = dict(re.findall(r"^(license|license_name):\s*['\"]?([^'\"\n]+?)['\"]?\s*$", match.group(1), re.M))
    value = fields.get("license")
    return fields.get("license_name", value) if value == "other" else value


__all__ = [
    "HUB_PREFIX", "WEIGHT_FILES", "CONFIG_FILE", "HubRepo", "HubRepoError", "PretrainedNotCachedError", "is_hub_id",
    "parse_hub_id", "cache_folder", "hub_file", "first_hub_file", "optional_hub_file", "license_from_model_card",
]

"""The machinery shared by the foreign-format importers: rename by a mapping table, then load with adaptation.

Each format (timm.py, hf.py, npz.py) is one table of rules; this module applies a table, fuses split Q/K/V
projections, and loads the result into a model: a different class count replaces the head, a different resolution
resamples the position embedding, and any other mismatch is reported by key, as an error or (lenient) a warning.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.layers import resample_pos_embed

Transform = Callable[[torch.Tensor], torch.Tensor]
HEAD_PREFIXES = ("head.", "head_dist.")  # classifier heads, replaced when the class count differs (DeiT has two)


@dataclass(frozen=True)
class Rule:
    """``source`` is a regex matched against the whole key; ``target`` may use its groups (\\1 ...)."""

    source: str
    target: str | None  # None drops the key on purpose (e.g. a mask token the model does not use)
    transform: Transform | None = None


class WeightLoadError(RuntimeError):
    """Raised when a checkpoint does not fit a model; the message lists every offending key."""


@dataclass
class LoadReport:
    """What a weight load did: where the tensors came from, what was adapted on purpose, what did not fit.

    ``describe()`` is the paragraph a command prints after a fine-tuning load; ``key_problems()`` lists only what
    did not fit (the text of a strict load's error).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (shape) vs model (shape)"
    adapted: list[str] = field(default_factory=list)  # what was resampled or re-initialised on purpose, one per key
    source: str = ""  # the file, or the hub repo, revision and file the weights came from
    fmt: str = ""  # vitkit, timm, hf or npz
    converted: int = 0  # tensors renamed (or fused, transposed) from the foreign format's names to vitkit's
    loaded: int = 0  # tensors copied into the model
    head_replaced: tuple[int, int] | None = None  # (checkpoint classes, model classes); model 0: head dropped
    pos_embed_resampled: tuple[tuple[int, int], tuple[int, int]] | None = None  # (checkpoint grid, model grid)
    license: str | None = None  # as the source's own config or model card states it; None: not stated

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def key_problems(self) -> str:
        parts = []
        for title, items in (
            ("missing from checkpoint", self.missing),
            ("unexpected in checkpoint", self.unexpected),
            ("shape mismatch", self.mismatched),
            ("adapted", self.adapted),
        ):
            if items:
                parts.append(f"{title} ({len(items)}): " + ", ".join(items))
        return "; ".join(parts) if parts else "all keys matched"

    def describe(self) -> str:
        """One paragraph: source and format, keys renamed, head replaced, position embedding resampled, what did not
        fit, license."""
        origin = f"from {self.source}" if self.source else "from the checkpoint"
        fmt = f" ({self.fmt} format)" if self.fmt else ""
        sentences = [f"Loaded {self.loaded} tensors {origin}{fmt}."]
        if self.converted:
            sentences.append(f"{self.converted} keys were adapted from {self.fmt or 'the foreign'} names to vitkit's.")
        if self.head_replaced is not None:
            old, new = self.head_replaced
            sentences.append(
                f"Head replaced: the checkpoint's {old}-class classifier was dropped and a new {new}-class head "
                "initialised (it trains from scratch)." if new else
                f"Head dropped: the checkpoint's {old}-class classifier is not used (the model has no head)."
            )
        if self.pos_embed_resampled is not None:
            (oh, ow), (nh, nw) = self.pos_embed_resampled
            sentences.append(f"Position embedding resampled from a {oh}x{ow} to a {nh}x{nw} patch grid (bicubic).")
        if self.clean:
            sentences.append("Every other tensor matched the model.")
        else:
            sentences.append(f"Not loaded ({self.key_problems()}).")
        sentences.append(f"License: {self.license}." if self.license else "License: not stated by the source.")
        return " ".join(sentences)


def apply_rules(state: dict[str, torch.Tensor], rules: Iterable[Rule]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key by the first rule that matches it; return (renamed dict, keys no rule matched)."""
    compiled = [(re.compile(r.source), r) for r in rules]
    out: dict[str, torch.Tensor] = {}
    unmatched = []
    for key, value in state.items():
        for pattern, rule in compiled:
            m = pattern.fullmatch(key)
            if m:
                if rule.target is not None:
                    out[m.expand(rule.target)] = rule.transform(value) if rule.transform else value
                break
        else:
            unmatched.append(key)
    return fuse_qkv(out), unmatched


def fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge keys ``X.qkv.weight#q``, ``#k``, ``#v`` (from formats with separate projections) into ``X.qkv.weight``."""
    out = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if "#" in key:
            base, which = key.rsplit("#", 1)
            parts.setdefault(base, {})[which] = value
        else:
            out[key] = value
    for base, qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise WeightLoadError(f"incomplete query/key/value set for {base}: found only {sorted(qkv)}")
        out[base] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


def load_into_model(
    model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True, source: str = "checkpoint"
) -> LoadReport:
    """Load a state dict already in vitkit naming, adapting head and position embedding; return a report.

    strict=True raises WeightLoadError on any missing, unexpected or mismatched key; strict=False warns and loads
    whatever fits. A head of another class count is always replaced (a fine-tuning load), and reported as adapted.
    """
    report = LoadReport(source=source)
    own = model.state_dict()
    state = dict(state)

    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = _resample_for(model, state["pos_embed"], own["pos_embed"], report)

    head_keys = [k for k in state if k.startswith(HEAD_PREFIXES)]
    if any(k in own and state[k].shape != own[k].shape for k in head_keys):
        report.head_replaced = (_classes(state, head_keys), _classes(own, head_keys))
        for k in head_keys:
            report.adapted.append(f"{k}: checkpoint {tuple(state.pop(k).shape)} replaced by a new head {tuple(own[k].shape)}")
    elif head_keys and not any(k in own for k in head_keys):  # num_classes=0 model: features only
        report.head_replaced = (_classes(state, head_keys), 0)
        for k in head_keys:
            state.pop(k)
            report.adapted.append(f"{k}: dropped (model has no classifier head)")

    loadable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif value.shape != own[key].shape:
            report.mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            loadable[key] = value
    new_head = {k.split(": ")[0] for k in report.adapted if k.startswith(HEAD_PREFIXES)}
    report.missing = [k for k in own if k not in state and k not in new_head]

    report.loaded = len(loadable)
    if not report.clean:
        msg = f"{source} does not fit {type(model).__name__}: {report.key_problems()}"
        if strict:
            raise WeightLoadError(msg + " (pass strict=False to load the matching keys only)")
        warnings.warn(msg, stacklevel=2)
    model.load_state_dict(loadable, strict=False)
    return report


def _resample_for(model: nn.Module, ckpt: torch.Tensor, target: torch.Tensor, report: LoadReport) -> torch.Tensor:
    """Resample a checkpoint's position embedding to the model's grid (fine-tuning at another resolution)."""
    no_embed_class = getattr(model, "no_embed_class", False)
    prefix = 0 if no_embed_class else getattr(model, "num_prefix_tokens", 1)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None or ckpt.shape[-1] != target.shape[-1]:
        return ckpt  # reported as a mismatch by the caller
    old_grid_tokens = ckpt.shape[1] - prefix
    side = int(round(old_grid_tokens**0.5))
    if side * side != old_grid_tokens:
        return ckpt
    resampled = resample_pos_embed(ckpt, grid, (side, side), num_prefix_tokens=prefix)
    report.adapted.append(f"pos_embed: resampled {side}x{side} -> {grid[0]}x{grid[1]} grid (bicubic)")
    report.pos_embed_resampled = ((side, side), (grid[0], grid[1]))
    return resampled


def _classes(state: dict[str, torch.Tensor], head_keys: list[str]) -> int:
    """The class count of a classifier: the output rows of its first weight matrix (a head may also hold norms)."""
    for key in head_keys:
        if key in state and key.endswith("weight") and state[key].ndim == 2:
            return int(state[key].shape[0])
    return 0

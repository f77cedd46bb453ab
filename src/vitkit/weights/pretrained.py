"""One entry point for pretrained weights from local files, whatever their origin.

Formats: vitkit safetensors, timm state dicts (.pth / .safetensors), Hugging Face ViT folders (config.json +
model.safetensors or pytorch_model.bin) and Google / big_vision .npz. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import registry
from ..models.contract import VitkitModel
from ..models.registry import build_from_config
from .convert import LoadReport, WeightLoadError, load_into_model
from .hf import class_names_from_hf_config, convert_hf, read_hf_config, vit_kwargs_from_hf_config
from .io import load_checkpoint, read_checkpoint_metadata, read_state_dict
from .npz import convert_npz, read_npz, vit_kwargs_from_npz
from .timm import convert_timm

FORMATS = ("vitkit", "timm", "hf", "npz")


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise ValueError(f"{path} is a folder without config.json; expected a Hugging Face model folder")
    if path.suffix == ".npz":
        return "npz"
    if path.suffix == ".safetensors":
        try:
            read_checkpoint_metadata(path)
            return "vitkit"
        except ValueError:
            pass
    state = read_state_dict(path)
    return "hf" if any(k.startswith(("vit.", "embeddings.", "encoder.layer")) for k in state) else "timm"


def _hf_weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has no model.safetensors or pytorch_model.bin")


def read_foreign(path: str | Path, fmt: str | None = None) -> tuple[str, dict[str, torch.Tensor], list[str]]:
    """Read a file or folder and rename its tensors to vitkit's names: (format, state dict, unconvertible keys)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}; expected one of {FORMATS}")
    if fmt == "vitkit":
        return fmt, read_state_dict(path), []
    if fmt == "npz":
        state, unmatched = convert_npz(read_npz(path))
    elif fmt == "hf":
        file = _hf_weights_file(path) if path.is_dir() else path
        state, unmatched = convert_hf(read_state_dict(file))
    else:
        state, unmatched = convert_timm(read_state_dict(path))
    return fmt, state, unmatched


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True, fmt: str | None = None) -> LoadReport:
    """Load local weights of any supported format into ``model``, adapting head and resolution; return the report."""
    fmt, state, unmatched = read_foreign(path, fmt)
    if unmatched:
        msg = f"{path} ({fmt}) has tensors vitkit cannot place: {', '.join(unmatched[:10])}"
        if strict:
            raise WeightLoadError(msg + " (pass strict=False to skip them)")
        import warnings

        warnings.warn(msg, stacklevel=2)
    report = load_into_model(model, state, strict=strict, source=f"{path} ({fmt})")
    report.unexpected.extend(unmatched)
    return report


def model_from_pretrained(
    path: str | Path, name: str | None = None, strict: bool = True, **overrides: Any
) -> nn.Module:
    """Build the model a weight file describes and load it.

    vitkit files and Hugging Face folders carry their config, .npz files are read off their shapes; a timm state dict
    needs the registered ``name`` (its heads cannot be read off shapes). ``overrides`` (num_classes, img_size ...)
    turn the load into a fine-tuning load: a new head, a resampled position embedding.
    """
    path = Path(path)
    fmt = detect_format(path)
    class_names = None
    if name is not None:
        model = registry.create_model(name, **overrides)
    elif fmt == "vitkit":
        meta = read_checkpoint_metadata(path)
        model = build_from_config(meta["arch"], {**meta["config"], **overrides})
        model.data_config = meta["data_config"]
        class_names = meta["extra"].get("class_names")
    elif fmt == "hf":
        cfg = read_hf_config(path)
        model = build_from_config("vit", {**vit_kwargs_from_hf_config(cfg), **overrides})
        class_names = class_names_from_hf_config(cfg)
        model.data_config = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 1.0}
    elif fmt == "npz":
        model = build_from_config("vit", {**vit_kwargs_from_npz(read_npz(path)), **overrides})
        model.data_config = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 0.875}
    else:
        raise ValueError(f"{path} looks like a timm state dict; pass the registered model name (name=...) to build it")
    model.load_report = load_pretrained(model, path, strict=strict, fmt=fmt)
    if class_names and "num_classes" not in overrides:
        model.class_names = class_names
    return model


def load_model(source: str | Path) -> nn.Module:
    """A vitkit checkpoint path, or a registered model name (random weights: enough for speed, not for accuracy)."""
    if Path(source).exists() or str(source).endswith(".safetensors"):
        return load_checkpoint(source)
    return registry.create_model(str(source))


def create_model(name: str, pretrained: str | Path | None = None, strict: bool = True, **overrides: Any) -> VitkitModel:
    """Build a registered model; ``pretrained`` loads local weights (vitkit, timm, Hugging Face folder or .npz).

    With overrides such as ``num_classes=10`` or ``img_size=384`` the load becomes a fine-tuning load: the head is
    replaced and the position embedding resampled; every other mismatch is an error (or a warning if strict=False).
    """
    model = registry.create_model(name, **overrides)
    if pretrained is not None:
        model.load_report = load_pretrained(model, pretrained, strict=strict)
    return model

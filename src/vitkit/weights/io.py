"""vitkit's own checkpoint format: safetensors with the model's config in the metadata, so a file rebuilds its model.

Also reads foreign state-dict files safely: safetensors, or ``torch.load(weights_only=True)`` for .pth/.bin,
which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..models.contract import VitkitModel
from ..models.registry import build_from_config
from ..runtime import unwrap_model
from ..utils.fileio import atomic_path, load_weights_only
from .convert import LoadReport, load_into_model

FORMAT_TAG = "vitkit"
FORMAT_VERSION = "1"


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write weights + config atomically as safetensors. ``metadata`` (JSON-able) is stored too, e.g. class names."""
    model = unwrap_model(model)
    if not isinstance(model, VitkitModel):
        raise TypeError(f"{type(model).__name__} is not a vitkit model (a vitkit.models.VitkitModel: it records "
                        "arch and config, so the file can rebuild it)")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "config": json.dumps(model.config),
        "model_name": model.model_name,
        "data_config": json.dumps(model.data_config),
        "extra": json.dumps(metadata or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a vitkit safetensors file (config, data_config, extra)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for a foreign or truncated file
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    if raw.get("format") != FORMAT_TAG:
        raise ValueError(
            f"{path} has no vitkit metadata (format={raw.get('format')!r}); to import foreign weights use "
            "vitkit.weights.load_pretrained(model, path) or vitkit.create_model(name, pretrained=path)"
        )
    return {
        "arch": raw["arch"],
        "config": json.loads(raw["config"]),
        "model_name": raw.get("model_name", ""),
        "data_config": json.loads(raw.get("data_config", "{}")),
        "extra": json.loads(raw.get("extra", "{}")),
    }


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", strict: bool = True) -> VitkitModel:
    """Rebuild a model from a vitkit safetensors file alone. The metadata is attached as ``model.checkpoint_meta``."""
    meta = read_checkpoint_metadata(path)
    model = build_from_config(meta["arch"], meta["config"])
    state = read_state_dict(path)
    load_into_model(model, state, strict=strict, source=str(path))
    model.model_name = meta["model_name"]
    model.data_config = meta["data_config"]
    model.checkpoint_meta = meta
    return model.to(map_location)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pth / .pt / .bin / .ckpt file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        obj = load_weights_only(path)
        for wrapper in ("state_dict", "model", "model_ema", "module"):
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{path} does not hold a flat state dict of tensors")
        if all(k.startswith("module.") for k in obj):
            obj = {k[len("module.") :]: v for k, v in obj.items()}
        return obj
    raise ValueError(f"unsupported weight file type {path.suffix!r} for {path}; expected .safetensors, .pth, .bin or .npz")


__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_metadata", "read_state_dict", "LoadReport"]

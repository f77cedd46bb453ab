"""vitkit's own checkpoint format: safetensors with the model's config in the metadata, so a file rebuilds its model.

Also reads foreign state-dict files safely: safetensors, or ``torch.load(weights_only=True)`` for .pth/.bin,
which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import math
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


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header (nothing else is read)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def check_config_matches_tensors(path: Path, meta: dict[str, Any], strict: bool = True) -> None:
    """Refuse a file whose metadata describes another model than its tensors, before anything is allocated.

    The model is built on the meta device (shapes only), so a 1 KB file claiming ``embed_dim=16384, depth=64`` costs
    nothing; without this the claimed model would be allocated in full first.
    """
    try:
        with torch.device("meta"):
            skeleton = build_from_config(meta["arch"], meta["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: its metadata does not describe a buildable {meta['arch']!r} model ({err})") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = _header_shapes(path)
    wrong = [(k, expected[k], stored[k]) for k in expected.keys() & stored.keys() if expected[k] != stored[k]]
    missing = sorted(expected.keys() - stored.keys())
    claimed = sum(math.prod(s) for s in expected.values())
    held = sum(math.prod(s) for s in stored.values())
    if wrong or (strict and missing) or claimed > 2 * held + 1_000_000:
        detail = (f"{wrong[0][0]}: metadata implies {wrong[0][1]}, the file holds {wrong[0][2]}" if wrong else
                  f"missing {missing[:3]}" if missing and strict else
                  f"the metadata implies {claimed:,} values, the file holds {held:,}")
        raise ValueError(f"{path}: its metadata (arch {meta['arch']!r}) does not match its tensors ({detail}); the "
                         f"file is damaged or was altered")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", strict: bool = True) -> VitkitModel:
    """Rebuild a model from a vitkit safetensors file alone. The metadata is attached as ``model.checkpoint_meta``.

    The metadata's config is checked against the tensor shapes in the file's header before the model is built.
    """
    meta = read_checkpoint_metadata(path)
    check_config_matches_tensors(Path(path), meta, strict=strict)
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

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError / OSError for a truncated or foreign file: name the file
            raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
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

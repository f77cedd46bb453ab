"""Weights in and out: vitkit safetensors, and importers for timm, Hugging Face and Google .npz checkpoints."""

from .convert import LoadReport, WeightLoadError
from .io import load_checkpoint, read_checkpoint_metadata, read_state_dict, save_checkpoint
from .npz import save_npz
from .pretrained import create_model, detect_format, load_model, load_pretrained, model_from_pretrained

__all__ = [
    "LoadReport", "WeightLoadError", "create_model", "load_checkpoint", "save_checkpoint", "read_checkpoint_metadata",
    "read_state_dict", "save_npz", "detect_format", "load_model", "load_pretrained", "model_from_pretrained",
]

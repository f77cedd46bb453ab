"""Training: a typed config, THE loop (engine.train), optimizer groups and schedules, checkpoints, monitoring, DDP/FSDP."""

from .config import Config, ConfigError, config_from_dict, load_config, parse_override, set_value
from .engine import NonFiniteLossError, build_model, train
from .evaluate import evaluate, evaluate_checkpoint

__all__ = [
    "Config", "ConfigError", "load_config", "config_from_dict", "parse_override", "set_value", "train", "build_model",
    "NonFiniteLossError", "evaluate", "evaluate_checkpoint",
]

"""Training: a typed config, THE loop (engine.train), schedules, checkpoints, monitoring, DDP/FSDP."""

from .config import Config, ConfigError, config_from_dict, load_config, parse_override, set_value
from .engine import NonFiniteLossError, Trainer, build_datasets, build_model, train
from .evaluate import evaluate, evaluate_checkpoint

__all__ = [
    "Config", "ConfigError", "load_config", "config_from_dict", "parse_override", "set_value", "train", "Trainer",
    "build_model", "build_datasets", "NonFiniteLossError", "evaluate", "evaluate_checkpoint",
]

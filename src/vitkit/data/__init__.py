"""Data pipeline: datasets as uint8 arrays (decoded once into a memmap cache), deterministic resumable loaders,
batched on-device augmentation and torchvision v2 per-sample transforms."""

from .arrays import ArrayDataset, channel_stats, stratified_split
from .batch_aug import BatchAugment, normalize_batch, soft_targets
from .datasets import build_dataset
from .loader import EpochLoader, build_loader
from .transforms import build_eval_transform, build_train_transform

__all__ = [
    "ArrayDataset", "BatchAugment", "EpochLoader", "build_dataset", "build_loader", "channel_stats",
    "normalize_batch", "soft_targets", "stratified_split", "build_train_transform", "build_eval_transform",
]

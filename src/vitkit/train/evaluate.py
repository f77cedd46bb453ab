"""Evaluation: loss, top-1/top-5, per-class accuracy and the confusion matrix, exact across ranks.

Used by the training loop for validation and by ``vitkit eval CHECKPOINT`` on its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import accuracy, confusion_matrix, per_class_accuracy, topk_correct
from ..runtime import amp_context
from ..utils.fileio import atomic_write_text
from .distributed import DistInfo, all_reduce_max, all_reduce_sum


def prepare_batch(images: torch.Tensor, mean, std, out_size: tuple[int, int] | None) -> torch.Tensor:
    """A loader batch as model input: uint8 batches (the tensor path) are normalised here, floats pass through."""
    from ..data import normalize_batch

    x = normalize_batch(images, mean, std) if images.dtype == torch.uint8 else images.float()
    if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    num_classes: int,
    mean,
    std,
    device: torch.device,
    precision: str = "fp32",
    out_size: tuple[int, int] | None = None,
    info: DistInfo | None = None,
    hflip_tta: bool = False,
    keep_logits: bool = False,
) -> dict[str, Any]:
    """Metrics over the whole loader; under DDP each rank sees its shard and the sums are reduced, not averaged.

    The loader delivers batches on ``device`` (vitkit's loaders move them). ``hflip_tta``: test-time augmentation,
    the logits averaged over each image and its mirror image (twice the cost; for data whose classes are
    mirror-symmetric, as in CIFAR). ``keep_logits``: also return this process's logits in loader order (CPU, fp32).
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    loss_sum = top5 = 0.0
    # FSDP2 gathers weights inside forward, a collective: ranks with a shorter eval shard run dummy batches
    lockstep = info is not None and info.strategy == "fsdp"
    dummy_batches = all_reduce_max(len(loader), device, info) - len(loader) if lockstep else 0
    kept = []
    for images, labels in loader:
        x = prepare_batch(images, mean, std, out_size)
        with amp_context(device, precision):
            logits = model(x).float()
            if hflip_tta:
                logits = (logits + model(x.flip(-1)).float()) / 2
        if keep_logits:
            kept.append(logits.cpu())
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        top5 += topk_correct(logits, labels, 5)
        confusion += confusion_matrix(logits, labels, num_classes)
    for _ in range(dummy_batches):
        with amp_context(device, precision):
            model(prepare_batch(images[:1], mean, std, out_size))
    model.train(was_training)
    if info is not None and info.enabled:
        import torch.distributed as dist

        dist.all_reduce(confusion)
        loss_sum, top5 = all_reduce_sum([loss_sum, top5], device, info)
    confusion = confusion.cpu()
    count = int(confusion.sum())
    result = {
        "loss": loss_sum / max(count, 1),
        "acc1": accuracy(confusion) * 100,
        "acc5": top5 / max(count, 1) * 100,
        "count": count,
        "per_class_acc": [100 * a for a in per_class_accuracy(confusion)],
        "confusion": confusion.tolist(),
    }
    if keep_logits:
        result["logits"] = torch.cat(kept) if kept else torch.zeros(0, num_classes)
    return result


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    *,
    split: str = "test",
    root: str | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    device: str = "cpu",
    out_dir: str | Path | None = None,
    dataset_kwargs: dict[str, Any] | None = None,
    model_transform: Callable[[nn.Module], nn.Module] | None = None,
    hflip_tta: bool = False,
) -> dict[str, Any]:
    """Evaluate a vitkit .safetensors checkpoint on a dataset split; writes eval.json to out_dir (the command draws
    confusion.png from the result's ``confusion``, with vitkit.viz).

    ``dataset_kwargs``: options of the dataset kind (e.g. synthetic ``num_samples``), as ``data.kwargs`` in training.
    ``model_transform``: applied to the loaded model before evaluation, e.g. INT8 quantization (vitkit.infer).
    """
    from ..data import build_dataset, build_loader
    from ..weights import load_checkpoint

    model = load_checkpoint(checkpoint, map_location=device)
    extra = getattr(model, "checkpoint_meta", {}).get("extra", {})
    num_classes, img_size = model.num_classes, tuple(model.config["img_size"])
    if model_transform is not None:
        model = model_transform(model)
    ds = build_dataset(data, split, **({"root": root} if root else {}), **(dataset_kwargs or {}))
    mean, std = extra.get("mean", ds.mean), extra.get("std", ds.std)
    classes = extra.get("class_names", ds.classes)
    if num_classes != ds.num_classes:
        raise ValueError(f"{checkpoint} predicts {num_classes} classes but {data!r} has {ds.num_classes}")
    if classes != list(ds.classes):
        raise ValueError(f"{checkpoint} was trained on classes {classes[:5]}... but {data!r} has {ds.classes[:5]}...")
    out_size = img_size
    dev = torch.device(device)
    loader = build_loader(ds, batch_size, train=False, device=dev)
    metrics = evaluate(model, loader, num_classes=ds.num_classes, mean=mean, std=std, device=dev,
                       precision=precision, out_size=out_size, hflip_tta=hflip_tta)
    metrics["per_class_acc"] = dict(zip(ds.classes, metrics["per_class_acc"]))
    result = {"checkpoint": str(checkpoint), "data": data, "split": split, "hflip_tta": hflip_tta, **metrics}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "eval.json", json.dumps(result, indent=2) + "\n")
    return result


__all__ = ["evaluate", "evaluate_checkpoint", "prepare_batch"]

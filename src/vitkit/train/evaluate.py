"""Evaluation: loss, top-1/top-5, per-class accuracy and the confusion matrix, exact across ranks.

Used by the training loop for validation and by ``vitkit eval CHECKPOINT`` on its own. Both preprocess with the
model's :class:`~vitkit.data.preprocess.Preprocessing`, the one ``vitkit predict`` and ``vitkit serve`` use; on an
image folder ``vitkit eval`` reads the source files themselves (not the decoded cache), decoded as predict decodes
them, so the two give the same prediction for every image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.preprocess import Preprocessing
from ..metrics import accuracy, confusion_matrix, per_class_accuracy, topk_correct
from ..runtime import amp_context
from ..utils.fileio import atomic_write_text
from .distributed import DistInfo, all_reduce_max, all_reduce_sum


def prepare_batch(images: torch.Tensor, mean, std, out_size: tuple[int, int] | None,
                  preprocessing: Preprocessing | None = None) -> torch.Tensor:
    """A loader batch as model input. uint8 batches (the tensor path) go through ``preprocessing`` when given (resize,
    center crop, normalise), else are normalised with mean/std; float batches were preprocessed per sample and pass
    through. A batch of another size than ``out_size`` is then resized to it."""
    from ..data import normalize_batch

    if images.dtype == torch.uint8:
        x = preprocessing.batch(images) if preprocessing is not None else normalize_batch(images, mean, std)
    else:
        x = images.float()
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
    preprocessing: Preprocessing | None = None,
) -> dict[str, Any]:
    """Metrics over the whole loader; under DDP each rank sees its shard and the sums are reduced, not averaged.

    The loader delivers batches on ``device`` (vitkit's loaders move them); uint8 batches go through
    ``preprocessing`` (the model's, see :func:`prepare_batch`). ``hflip_tta``: test-time augmentation,
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
        x = prepare_batch(images, mean, std, out_size, preprocessing)
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
            model(prepare_batch(images[:1], mean, std, out_size, preprocessing))
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
    keep_predictions: bool = False,
    val_fraction: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Evaluate a vitkit .safetensors checkpoint on a dataset split; writes eval.json to out_dir (the command draws
    confusion.png from the result's ``confusion``, with vitkit.viz).

    Images go through the checkpoint's own :class:`Preprocessing`. An image folder is evaluated on its source files,
    decoded as ``vitkit predict`` decodes them; array datasets (digits, synthetic, CIFAR) on their uint8 arrays.
    ``dataset_kwargs``: options of the dataset kind (e.g. synthetic ``num_samples``), as ``data.kwargs`` in training.
    ``model_transform``: applied to the loaded model before evaluation, e.g. INT8 quantization (vitkit.infer).
    ``val_fraction`` / ``seed``: how a validation split is carved out of a dataset without one (default: as the
    checkpoint's training run carved it, so ``split="val"`` is the run's own validation images and ``"train"`` the
    rest; 0 for a checkpoint that does not say).
    ``keep_predictions``: also list every image (``path`` for files, ``index`` for arrays), its label and the
    predicted class.
    """
    from ..data import build_dataset, build_loader
    from ..weights import load_checkpoint

    model = load_checkpoint(checkpoint, map_location=device)
    extra = getattr(model, "checkpoint_meta", {}).get("extra", {})
    preprocessing = Preprocessing.from_model(model)
    num_classes = model.num_classes
    if model_transform is not None:
        model = model_transform(model)
    options: dict[str, Any] = {"root": root} if root else {}
    if _names_a_folder(data):  # stored as training stored it, so the run's decoded cache serves the split listing
        options.update(img_size=preprocessing.img_size[0], crop_pct=preprocessing.crop_pct)
    carved = extra.get("data_split", {})
    val_fraction = float(carved.get("val_fraction", 0.0) if val_fraction is None else val_fraction)
    seed = int(carved.get("seed", 0) if seed is None else seed)
    ds = build_dataset(data, split, val_fraction=val_fraction, seed=seed, **options, **(dataset_kwargs or {}))
    classes = extra.get("class_names", ds.classes)
    if num_classes != ds.num_classes:
        raise ValueError(f"{checkpoint} predicts {num_classes} classes but {data!r} has {ds.num_classes}")
    if classes != list(ds.classes):
        raise ValueError(f"{checkpoint} was trained on classes {classes[:5]}... but {data!r} has {ds.classes[:5]}...")
    dev = torch.device(device)
    files = source_files(ds)
    skipped: list[str] = []
    if files is not None:
        loader: Any = RawImageBatches(files, ds.labels, preprocessing, batch_size, dev, skipped)
    else:
        loader = build_loader(ds, batch_size, train=False, device=dev)
    metrics = evaluate(model, loader, num_classes=ds.num_classes, mean=preprocessing.mean, std=preprocessing.std,
                       device=dev, precision=precision, hflip_tta=hflip_tta, keep_logits=keep_predictions,
                       preprocessing=preprocessing)
    metrics["per_class_acc"] = dict(zip(ds.classes, metrics["per_class_acc"]))
    result = {"checkpoint": str(checkpoint), "data": data, "split": split, "hflip_tta": hflip_tta,
              "inputs": "source files" if files is not None else "arrays",
              "split_source": ds.meta.get("split_source", split), "val_fraction": val_fraction, "split_seed": seed,
              "preprocessing": preprocessing.to_dict(), **metrics}
    if files is not None:
        result["undecodable"] = skipped
    if keep_predictions:
        predicted = result.pop("logits").argmax(dim=-1).tolist()
        if files is not None:
            undecodable = set(skipped)
            rows = [(p, y) for p, y in zip(files, ds.labels.tolist()) if p not in undecodable]
            result["predictions"] = [{"path": p, "label": ds.classes[y], "predicted": ds.classes[k]}
                                     for (p, y), k in zip(rows, predicted)]
        else:
            result["predictions"] = [{"index": i, "label": ds.classes[y], "predicted": ds.classes[k]}
                                     for i, (y, k) in enumerate(zip(ds.labels.tolist(), predicted))]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "eval.json", json.dumps(result, indent=2) + "\n")
    return result


def _names_a_folder(data: str) -> bool:
    return str(data).startswith("imagefolder:") or Path(str(data)).expanduser().is_dir()


def source_files(ds) -> list[str] | None:
    """The source file of every row of an image-folder split, in row order; None for array datasets.

    Read from ``ds.meta["files"]`` when the dataset lists them; otherwise the split's folder
    (``ds.meta["source"]``, one subfolder per class) is listed again as the cache listed it, without the files the
    cache skipped, and the result must reproduce the dataset's labels row for row.
    """
    if ds.meta.get("files") is not None:
        files = [str(f) for f in ds.meta["files"]]
        if len(files) != len(ds):
            raise ValueError(f"{ds.name}/{ds.split}: {len(files)} source files listed for {len(ds)} images")
        return files
    source = Path(str(ds.meta.get("source", "")))
    if not ds.meta.get("source") or not all((source / name).is_dir() for name in ds.classes):
        return None
    from ..data.imagefolder import scan_split

    files, labels = scan_split(source, ds.classes)
    report = ds.meta.get("skipped_report")
    if report and Path(report).is_file():
        dropped = {line.split("\t", 1)[0] for line in Path(report).read_text().splitlines() if line}
        keep = [i for i, f in enumerate(files) if f not in dropped]
        files, labels = [files[i] for i in keep], labels[keep]
    if len(files) != len(ds) or list(labels) != ds.labels.tolist():
        raise ValueError(f"{source}: the folder's images do not match the dataset's {len(ds)} rows (a split carved "
                         "out of a folder lists its files in meta['files']); cannot evaluate its source files")
    return files


class RawImageBatches:
    """Image files -> (preprocessed float batch, labels) on ``device``, decoded as ``vitkit predict`` decodes them.

    Files that cannot be decoded are left out and their paths appended to ``skipped``.
    """

    def __init__(self, files: Sequence[str], labels, preprocessing: Preprocessing, batch_size: int,
                 device: torch.device, skipped: list[str]) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.files, self.labels = list(files), [int(y) for y in labels]
        self.preprocessing, self.batch_size, self.device, self.skipped = preprocessing, batch_size, device, skipped

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from ..data.decode import BadImageError

        for start in range(0, len(self.files), self.batch_size):
            paths = self.files[start : start + self.batch_size]
            decoded = self.preprocessing.read(paths)
            good = [(img, y) for img, y in zip(decoded, self.labels[start : start + self.batch_size])
                    if not isinstance(img, BadImageError)]
            self.skipped.extend(err.path for err in decoded if isinstance(err, BadImageError))
            if not good:
                continue
            x = self.preprocessing.stack([img for img, _ in good]).to(self.device)
            yield x, torch.tensor([y for _, y in good], device=self.device)


__all__ = ["RawImageBatches", "evaluate", "evaluate_checkpoint", "prepare_batch", "source_files"]

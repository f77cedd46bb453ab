"""Batched top-k prediction from a checkpoint: files, folders or globs in, labels with probabilities out.

The checkpoint carries everything needed (architecture, weights, class names, preprocessing); unreadable images
are reported by path and skipped, so one corrupt file never loses the rest of a batch. Images are decoded and
preprocessed by the checkpoint's ``Preprocessing`` (``read``, ``stack``), as ``vitkit eval`` and ``serve`` do.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, BadImageError
from ..data.files import find_images
from ..runtime import amp_context, resolve_device
from .preprocess import InferenceSpec

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


class Predictor:
    """A model ready for inference: eval mode, on its device, in a precision, with its preprocessing and labels."""

    def __init__(
        self, model: nn.Module, spec: InferenceSpec | None = None, device: str | torch.device | None = "cpu",
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.spec = spec or InferenceSpec.from_model(model)
        self.device = resolve_device(device)
        self.precision = precision
        model = model.eval().to(self.device)
        if precision == "int8":
            if self.device.type != "cpu":
                raise ValueError("int8 dynamic quantization runs on the CPU only; use --device cpu or bf16/fp16")
            from .quantize import quantize_dynamic_int8

            model = quantize_dynamic_int8(model)
        self.model = model
        self.transform = self.spec.transform()  # one decoded image -> model input (the service's per-request step)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device | None = "cpu", precision: str = "fp32"
    ) -> Predictor:
        from ..weights import load_checkpoint

        return cls(load_checkpoint(path), device=device, precision=precision)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def preprocess(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoded uint8 images (any size) -> one normalised batch on the model's device."""
        return self.spec.stack(images).to(self.device)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        with amp_context(self.device, self.precision):
            return self.model(batch.to(self.device)).float()

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.logits(batch).softmax(dim=-1)

    def topk(self, probs: torch.Tensor, k: int) -> list[list[tuple[str, float]]]:
        k = min(k, probs.shape[-1])
        values, indices = probs.topk(k, dim=-1)
        names = self.class_names
        return [
            [(names[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
            for row_p, row_i in zip(values.cpu(), indices.cpu())
        ]


# --- inputs ---------------------------------------------------------------------------------------------------------


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Files, folders (searched recursively for image extensions) and globs -> (sorted image paths, problems).

    An input that names nothing is a problem reported by name; a file given explicitly is kept whatever its
    extension (the decoder decides whether it is an image).
    """
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        item = str(item)
        p = Path(item)
        if p.is_dir():
            found = find_images(p)
            if not found:
                problems.append(f"{item}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(item):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                problems.append(f"{item}: pattern matches no files")
            paths.extend(found)
        else:
            problems.append(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = [p for p in paths if not (p in seen or seen.add(p))]
    return unique, problems


def load_image_batch(
    model_or_spec: nn.Module | InferenceSpec, sources: Iterable[str | Path], limit: int | None = None,
) -> torch.Tensor:
    """Real images (files, folders, globs) through the model's own preprocessing, as one float batch.

    For parity checks and calibration, where a missing input or an unreadable file would silently weaken the check:
    an input that names nothing is an error; undecodable files are left out, and none decodable is an error.
    ``limit`` caps the number of images read (in sorted path order).
    """
    sources = [str(s) for s in sources]
    paths, problems = expand_inputs(sources)
    if problems:
        raise ValueError("; ".join(problems))
    spec = model_or_spec if isinstance(model_or_spec, InferenceSpec) else InferenceSpec.from_model(model_or_spec)
    decoded = spec.read([str(p) for p in paths[:limit]])
    images = [img for img in decoded if not isinstance(img, BadImageError)]
    if not images:
        raise ValueError(f"none of the images in {sources} could be decoded")
    return spec.stack(images)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]


@dataclass
class PredictionRun:
    predictions: list[Prediction] = field(default_factory=list)
    failures: list[BadImageError] = field(default_factory=list)


def predict_paths(
    predictor: Predictor, paths: Sequence[Path], batch_size: int = 32, topk: int = 5, strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS, on_batch: Callable[[int], None] | None = None,
) -> PredictionRun:
    """Decode, transform and classify ``paths`` in batches. Bad images are collected (or raised if ``strict``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    run = PredictionRun()
    for chunk in _chunks(paths, batch_size):
        decoded = predictor.spec.read([str(p) for p in chunk], max_pixels=max_pixels)
        good = [(p, img) for p, img in zip(chunk, decoded) if isinstance(img, torch.Tensor)]
        bad = [err for err in decoded if isinstance(err, BadImageError)]
        if bad and strict:
            raise bad[0]
        run.failures.extend(bad)
        if good:
            probs = predictor.probabilities(predictor.preprocess([img for _, img in good]))
            for (p, _), top in zip(good, predictor.topk(probs, topk)):
                run.predictions.append(Prediction(str(p), top))
        if on_batch is not None:
            on_batch(len(chunk))
    return run


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- output formats -------------------------------------------------------------------------------------------------


def format_predictions(predictions: Sequence[Prediction], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(
            [{"path": p.path, "top": [{"label": lab, "prob": round(prob, 6)} for lab, prob in p.top]}
             for p in predictions],
            indent=2,
        )
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "rank", "label", "prob"])
        for p in predictions:
            for rank, (lab, prob) in enumerate(p.top, 1):
                writer.writerow([p.path, rank, lab, f"{prob:.6f}"])
        return buf.getvalue().rstrip("\n")
    if fmt == "table":
        if not predictions:
            return "(no predictions)"
        width = max(len(p.path) for p in predictions)
        lines = [f"{'image':{width}s}  top-k (probability)"]
        for p in predictions:
            lines.append(f"{p.path:{width}s}  " + ", ".join(f"{lab} {prob:.3f}" for lab, prob in p.top))
        return "\n".join(lines)
    raise ValueError(f"unknown format {fmt!r}; expected table, json or csv")


__all__ = [
    "PRECISIONS", "Prediction", "PredictionRun", "Predictor", "expand_inputs", "format_predictions",
    "load_image_batch", "predict_paths",
]

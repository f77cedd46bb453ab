"""Classification metrics from logits and labels: the confusion matrix, top-k hits and the accuracies read off them.

Plain tensor arithmetic with no model, loader or device policy, so evaluation in training, inference checks and
reports all count the same way. Counts stay on the input's device (a caller may all-reduce them across ranks before
turning them into accuracies).
"""

from __future__ import annotations

import torch


def predicted_classes(scores: torch.Tensor) -> torch.Tensor:
    """Class indices (N,): ``scores`` as they are if already indices, else the argmax of logits/probabilities (N, C)."""
    return scores.argmax(dim=-1) if scores.is_floating_point() or scores.ndim == 2 else scores


def confusion_matrix(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts: true class down, predicted class across.

    ``scores``: logits or probabilities (N, C), or predicted class indices (N,).
    """
    labels = labels.to(torch.int64).reshape(-1)
    predicted = predicted_classes(scores).to(device=labels.device, dtype=torch.int64).reshape(-1)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.numel()} predictions for {labels.numel()} labels")
    flat = torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> int:
    """How many rows of ``logits`` (N, C) rank their label among the ``k`` highest (k is capped at C)."""
    k = min(k, logits.shape[-1])
    labels = labels.to(device=logits.device, dtype=torch.int64).reshape(-1, 1)
    return int((logits.topk(k, dim=-1).indices == labels).any(dim=-1).sum())


def accuracy(confusion: torch.Tensor) -> float:
    """The fraction of samples on the diagonal (0.0 for an empty matrix)."""
    total = int(confusion.sum())
    return float(confusion.diag().sum()) / total if total else 0.0


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Per true class, the fraction predicted right (recall); 0.0 for a class with no samples."""
    return (confusion.diag().double() / confusion.sum(dim=1).clamp(min=1).double()).tolist()


__all__ = ["accuracy", "confusion_matrix", "per_class_accuracy", "predicted_classes", "topk_correct"]

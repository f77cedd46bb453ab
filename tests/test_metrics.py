"""Classification metrics counted from logits and labels."""

from __future__ import annotations

import pytest
import torch

from vitkit.metrics import accuracy, confusion_matrix, per_class_accuracy, predicted_classes, topk_correct

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0]])
LABELS = torch.tensor([0, 1, 2, 1])  # right, right, second choice, third choice


def test_confusion_matrix_from_logits_or_indices():
    expected = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 1, 0]])
    assert torch.equal(confusion_matrix(LOGITS, LABELS, 3), expected)
    assert torch.equal(confusion_matrix(torch.tensor([0, 1, 1, 2]), LABELS, 3), expected)
    assert confusion_matrix(LOGITS, LABELS, 3).dtype == torch.int64
    with pytest.raises(ValueError, match="3 predictions for 4 labels"):
        confusion_matrix(LOGITS[:3], LABELS, 3)


def test_accuracies_and_topk():
    confusion = confusion_matrix(LOGITS, LABELS, 3)
    assert accuracy(confusion) == 0.5
    assert per_class_accuracy(confusion) == [1.0, 0.5, 0.0]
    assert accuracy(torch.zeros(3, 3, dtype=torch.int64)) == 0.0
    assert [topk_correct(LOGITS, LABELS, k) for k in (1, 2, 3, 10)] == [2, 3, 4, 4]
    assert torch.equal(predicted_classes(LOGITS), torch.tensor([0, 1, 1, 2]))

"""Evaluation of a model on batches: horizontal-flip test-time augmentation."""

from __future__ import annotations

import pytest
import torch


def test_hflip_tta_averages_the_logits_of_image_and_mirror():
    from vitkit.train.evaluate import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    images, labels = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    kwargs = dict(num_classes=3, mean=(0.0,) * 3, std=(1.0,) * 3, device=torch.device("cpu"))
    plain = evaluate(model, [(images, labels)], **kwargs)
    tta = evaluate(model, [(images, labels)], hflip_tta=True, **kwargs)
    with torch.no_grad():
        expected = (model(images) + model(images.flip(-1))) / 2
    assert tta["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(expected, labels)), rel=1e-6)
    assert tta["acc1"] == pytest.approx(float((expected.argmax(1) == labels).float().mean() * 100))
    assert plain["loss"] != pytest.approx(tta["loss"])  # the mirror really was seen

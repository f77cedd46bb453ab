"""Measuring a step: fake execution (FakeTensorMode) measures exactly what real execution does."""

import pytest

from tests.helpers.plan import SMALL
from vitkit.models import VisionTransformer
from vitkit.plan.measure import measure_step


def test_fake_execution_measures_exactly_what_real_execution_does():
    """FakeTensorMode runs the same dispatch without arithmetic; it is how large/bf16 grid points are measured."""
    for mode, precision, ckpt in [("train", "bf16", True), ("infer", "fp32", False)]:
        real = measure_step(VisionTransformer(**SMALL), 4, mode, precision, "adamw", ckpt, execute="real")
        fake = measure_step(VisionTransformer(**SMALL), 4, mode, precision, "adamw", ckpt, execute="fake")
        assert fake.peak_bytes == real.peak_bytes and fake.flops == real.flops
    with pytest.raises(ValueError, match="execute must be one of"):
        measure_step(VisionTransformer(**SMALL), 8, execute="dry")

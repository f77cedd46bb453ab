"""Fixtures shared by tests in several folders."""

from __future__ import annotations

import pytest

from tests.helpers.infer import save_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny vit_tiny_patch4_32 checkpoint with CIFAR-10 class names (tests.helpers.infer), one per test module."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("export") / "tiny.safetensors")

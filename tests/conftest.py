"""Fixtures shared by tests in several folders."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.infer import save_tiny_checkpoint

# `make test` runs the suite in one pytest-xdist worker per core: each worker computes on one thread, so the workers
# share the cores instead of oversubscribing them (the subprocesses that tests start run single-threaded too).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny vit_tiny_patch4_32 checkpoint with CIFAR-10 class names (tests.helpers.infer), one per test module."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("export") / "tiny.safetensors")


# The modules that take longest (torchrun groups, every registered model, subprocess kills) run first, so that the
# xdist workers, which receive whole modules in collection order, end together instead of one waiting on the other.
SLOW_MODULES = (
    "tests/train/test_distributed.py", "tests/cli/test_models.py", "tests/train/test_distill.py",
    "tests/infer/test_agreement.py", "tests/train/test_checkpoint.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return SLOW_MODULES.index(path) if path in SLOW_MODULES else len(SLOW_MODULES)

    items.sort(key=rank)  # stable: the order inside a module and among the rest is kept

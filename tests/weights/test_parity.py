"""Logit parity with timm, Hugging Face and Google's .npz layout (max abs diff <= 1e-5 in float32)."""

import pytest

from vitkit.weights import parity as pc

TOL = 1e-5


@pytest.mark.parametrize("case", pc.TIMM_CASES, ids=lambda c: c.name)
def test_timm_parity(case, tmp_path):
    pytest.importorskip("timm")
    assert pc.run_timm_case(case, tmp_path) <= TOL


def test_timm_pth_parity(tmp_path):
    pytest.importorskip("timm")
    assert pc.run_timm_pth_case(tmp_path, depth=2, num_classes=10) <= TOL


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_hf_parity(size, tmp_path):
    pytest.importorskip("transformers")
    assert pc.run_hf_case(tmp_path, size=size) <= TOL


def test_npz_round_trip_matches_source_and_timm_loader(tmp_path):
    pytest.importorskip("timm")
    diffs = pc.run_npz_case(tmp_path)
    assert diffs["npz_vs_source"] <= TOL
    assert diffs["npz_vs_timm_loader"] <= TOL

"""Logit parity with timm, Hugging Face and Google's .npz layout (max abs diff <= 1e-5 in float32)."""

import pytest
import torch

import parity_cases as pc

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


def test_full_configs_match_timm_parameter_counts():
    timm = pytest.importorskip("timm")
    import vitkit

    names = [n for n in vitkit.list_models("vit_*") if n in timm.list_models()]
    assert len(names) >= 17
    for name in names:
        with torch.device("meta"):
            ours = vitkit.create_model(name)
            peer = timm.create_model(name, pretrained=False)
        ours_sd, peer_sd = ours.state_dict(), peer.state_dict()
        assert set(ours_sd) == set(peer_sd), name
        assert all(ours_sd[k].shape == peer_sd[k].shape for k in ours_sd), name


@pytest.mark.parametrize(
    "name,millions",
    [("vit_tiny_patch16_224", 5.72), ("vit_small_patch16_224", 22.05), ("vit_base_patch16_224", 86.57),
     ("vit_large_patch16_224", 304.33), ("vit_huge_patch14_224", 630.76)],
)
def test_parameter_counts_quoted_by_timm(name, millions):
    import vitkit

    with torch.device("meta"):
        model = vitkit.create_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions

"""The model registry: names and families, construction on the meta device, and configurations that match timm's."""

import pytest
import torch

import vitkit


def test_registry_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="vit_tiny_patch16_224"):
        vitkit.create_model("vit_tiny_patch16_244")
    with pytest.raises(TypeError, match="vit_tiny_patch16_224"):
        vitkit.create_model("vit_tiny_patch16_224", not_an_arg=1)


def test_registry_lists_required_families():
    names = vitkit.list_models()
    for required in ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_small_patch32_224", "vit_base_patch16_224",
                     "vit_base_patch32_224", "vit_base_patch8_224", "vit_large_patch16_224", "vit_huge_patch14_224",
                     "vit_base_patch16_384", "simplevit_small_patch16_224", "vit_tiny_patch4_32", "vit_tiny_patch2_32"]:
        assert required in names
    assert vitkit.list_models("simplevit_*") and all(n.startswith("simplevit_") for n in vitkit.list_models("simplevit_*"))


def test_create_model_on_meta_device_allocates_nothing():
    with torch.device("meta"):
        model = vitkit.create_model("vit_huge_patch14_224")
    assert all(p.is_meta for p in model.parameters())


def test_simplevit_is_big_vision_layout():
    model = vitkit.create_model("simplevit_small_patch16_224")
    assert model.cls_token is None and model.pos_embed is None and model.pooling == "gap"
    assert isinstance(model.norm, torch.nn.LayerNorm)  # norm before pooling, as in big_vision


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

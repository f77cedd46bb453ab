"""DeiT with a distillation token: timm layout and logits, the two heads, the planner."""

import pytest
import torch

import vitkit
from vitkit.models.deit import DistilledVisionTransformer
from vitkit.weights import parity as pc

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "deit_small_patch16_224",
                                  "deit_base_distilled_patch16_384"])
def test_registry_matches_timm_state_dict_layout(name):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours, peer = vitkit.create_model(name), timm.create_model(name, pretrained=False)
    ours_sd, peer_sd = ours.state_dict(), peer.state_dict()
    assert set(ours_sd) == set(peer_sd)
    assert all(ours_sd[k].shape == peer_sd[k].shape for k in ours_sd)


def test_timm_logit_parity_through_a_file(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    peer = timm.models.deit.VisionTransformerDistilled(**TINY).eval()
    pc.randomize_weights(peer, 0)
    path = tmp_path / "deit.safetensors"
    save_file({k: v.contiguous() for k, v in peer.state_dict().items()}, str(path))
    ours = DistilledVisionTransformer(**TINY).eval()
    report = vitkit.load_pretrained(ours, path)
    assert report.clean, report.describe()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert pc.max_abs_diff(peer(x), ours(x)) <= 1e-5


def test_two_heads_in_distilled_training_and_their_mean_otherwise():
    model = DistilledVisionTransformer(**TINY)
    x = torch.randn(3, 3, 32, 32)
    model.train()
    assert model(x).shape == (3, 10)
    model.set_distilled_training(True)
    cls_logits, dist_logits = model(x)
    model.eval()
    with torch.no_grad():
        mean = model(x)
        feats = model.forward_features(x)
    assert torch.allclose(mean, (model.head(feats[:, 0]) + model.head_dist(feats[:, 1])) / 2, atol=1e-6)
    assert cls_logits.shape == dist_logits.shape == (3, 10)


def test_checkpoint_round_trip_rebuilds_deit(tmp_path):
    model = vitkit.create_model("deit_tiny_distilled_patch4_32", depth=1).eval()
    vitkit.save_checkpoint(model, tmp_path / "d.safetensors")
    again = vitkit.load_checkpoint(tmp_path / "d.safetensors").eval()
    assert isinstance(again, DistilledVisionTransformer)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_planner_counts_the_distillation_token():
    from vitkit.plan.planner import PlanRequest, _shape

    shape, params, _ = _shape(PlanRequest(model="deit_tiny_distilled_patch16_224"))
    plain, plain_params, _ = _shape(PlanRequest(model="deit_tiny_patch16_224"))
    assert shape.num_prefix_tokens == plain.num_prefix_tokens + 1 == 2
    assert params == 5910800 and plain_params == 5717416


def test_fine_tuning_load_replaces_both_heads(tmp_path):
    source = DistilledVisionTransformer(**TINY)
    vitkit.save_checkpoint(source, tmp_path / "src.safetensors")
    model = DistilledVisionTransformer(**{**TINY, "num_classes": 3})
    report = vitkit.load_pretrained(model, tmp_path / "src.safetensors")
    assert report.clean and sum(a.startswith("head_dist.") for a in report.adapted) == 2
    assert torch.equal(model.dist_token, source.dist_token)

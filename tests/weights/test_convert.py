"""Loading converted state dicts into a model: head replacement, position-embedding resampling, mismatches."""

import pytest
import torch

import vitkit
from tests.helpers.weights import TINY, tiny
from vitkit.models import VisionTransformer
from vitkit.weights import WeightLoadError, load_pretrained, model_from_pretrained


def test_fine_tune_load_replaces_head_and_resamples_pos_embed(tmp_path):
    source = tiny()
    path = vitkit.save_checkpoint(source, tmp_path / "src.safetensors")
    model = VisionTransformer(**{**TINY, "num_classes": 7, "img_size": 48})
    report = load_pretrained(model, path)
    assert report.clean
    assert any("head.weight" in a for a in report.adapted) and any("pos_embed" in a for a in report.adapted)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 7)
    via_factory = model_from_pretrained(path, num_classes=3)
    assert via_factory.head.out_features == 3


def test_resampled_pos_embed_keeps_outputs_close_for_smooth_embeddings(tmp_path):
    source = tiny()
    with torch.no_grad():  # a smooth embedding, as training produces: resampling it is nearly lossless
        grid = torch.linspace(-1, 1, 4)
        smooth = (grid[:, None, None] * torch.linspace(0, 1, 48) + grid[None, :, None]).reshape(1, 16, 48)
        source.pos_embed[:, 1:] = smooth * 0.1
    path = vitkit.save_checkpoint(source, tmp_path / "s.safetensors")
    up = model_from_pretrained(path, img_size=64).eval()
    back = VisionTransformer(**TINY).eval()
    back.load_state_dict({**up.state_dict(), "pos_embed": vitkit.models.resample_pos_embed(up.pos_embed, (4, 4))})
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back(x), source(x), rtol=0, atol=5e-3)


def test_mismatch_is_an_error_listing_keys_or_a_warning_when_lenient(tmp_path):
    path = vitkit.save_checkpoint(tiny(), tmp_path / "a.safetensors")
    other = VisionTransformer(**{**TINY, "depth": 3, "qk_norm": True})
    with pytest.raises(WeightLoadError, match=r"missing from checkpoint .*blocks\.2\.norm1\.weight"):
        load_pretrained(other, path)
    with pytest.warns(UserWarning, match="blocks.0.attn.q_norm.weight"):
        report = load_pretrained(other, path, strict=False)
    assert "blocks.2.mlp.fc1.weight" in report.missing
    torch.testing.assert_close(other.blocks[0].mlp.fc1.weight, tiny().blocks[0].mlp.fc1.weight)
    wider = VisionTransformer(**{**TINY, "mlp_ratio": 2.0})
    with pytest.raises(WeightLoadError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint \(192, 48\) vs model \(96, 48\)"):
        load_pretrained(wider, path)


def test_load_report_records_the_adaptations_and_describes_them_in_one_paragraph(tmp_path):
    path = vitkit.save_checkpoint(tiny(), tmp_path / "src.safetensors")
    model = VisionTransformer(**{**TINY, "num_classes": 2, "img_size": 16})
    report = load_pretrained(model, path)
    assert report.head_replaced == (5, 2) and report.pos_embed_resampled == ((4, 4), (2, 2))
    assert report.source == str(path) and report.fmt == "vitkit" and report.converted == 0
    assert report.loaded == len(model.state_dict()) - 2  # all but the new head's weight and bias
    text = report.describe()
    assert "\n" not in text
    for phrase in (str(path), "5-class classifier", "new 2-class head", "4x4 to a 2x2", "Every other tensor matched",
                   "License: not stated"):
        assert phrase in text, text
    features = VisionTransformer(**{**TINY, "num_classes": 0})
    assert "Head dropped" in load_pretrained(features, path).describe()
    with pytest.warns(UserWarning):
        lenient = load_pretrained(VisionTransformer(**{**TINY, "depth": 3}), path, strict=False)
    assert "Not loaded (missing from checkpoint (12): blocks.2." in lenient.describe()

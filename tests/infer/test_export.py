"""Exports are verified against eager PyTorch before they are reported as done."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.infer import CLASS_NAMES, tiny_model, write_images
from vitkit import load_checkpoint
from vitkit.infer import ExportParityError, InferenceSpec, OnnxModel, export_model


def _real_batch(model, folder):
    from vitkit.data.decode import read_many_rgb

    transform = InferenceSpec.from_model(model).transform()
    return torch.stack([transform(img) for img in read_many_rgb([str(p) for p in write_images(folder, 4)])])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors", "hf"])
def test_export_is_verified_on_random_and_real_inputs(fmt, tiny_checkpoint, tmp_path):
    model = load_checkpoint(tiny_checkpoint)
    out = tmp_path / {"onnx": "m.onnx", "torchscript": "m.pt", "safetensors": "m.safetensors", "hf": "m_hf"}[fmt]
    report = export_model(model, fmt, out, check_inputs=_real_batch(model, tmp_path / "imgs"))
    assert out.exists()
    assert [c.name for c in report.checks] == ["random_b2", "random_b3", "real_images"]
    assert report.max_abs_diff <= 1e-4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging leftovers

    x = torch.randn(5, 3, 32, 32)  # a batch size never seen while exporting
    with torch.no_grad():
        expected = model(x)
        if fmt == "onnx":
            runner = OnnxModel(out)
            assert json.loads(runner.metadata["vitkit.class_names"]) == CLASS_NAMES
            assert report.details["opset"] == 17
            got = runner(x)
        elif fmt == "torchscript":
            got = torch.jit.load(str(out))(x)
        elif fmt == "safetensors":
            reloaded = load_checkpoint(out)
            assert reloaded.checkpoint_meta["extra"]["class_names"] == CLASS_NAMES
            got = reloaded(x)
        else:
            from transformers import ViTForImageClassification

            hf = ViTForImageClassification.from_pretrained(out).eval()
            assert hf.config.id2label[3] == "cat"
            got = hf(pixel_values=x).logits
    assert (got - expected).abs().max() < 1e-4


def test_failed_parity_raises_and_writes_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportParityError, match=r"max abs diff .* > tolerance 1e-12"):
        export_model(load_checkpoint(tiny_checkpoint), "onnx", out, atol=1e-12)  # onnxruntime differs by ~1e-7
    assert list(tmp_path.iterdir()) == []


def test_hf_refuses_what_transformers_cannot_represent(tmp_path):
    model = tiny_model(class_token=False, pooling="gap")
    with pytest.raises(ValueError, match="pooling='gap'"):
        export_model(model, "hf", tmp_path / "hf")
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(model, "tflite", tmp_path / "x")

"""Exports are verified against eager PyTorch before they are reported as done."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.infer import CLASS_NAMES, tiny_model, write_images
from vitkit import load_checkpoint
from vitkit.data.preprocess import Preprocessing
from vitkit.infer import ExportParityError, InferenceSpec, OnnxModel, export_model
from vitkit.infer.export import hf_image_processor_config


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
            assert json.loads(runner.metadata["vitkit.class_names"]) == CLASS_NAMES == runner.class_names
            assert runner.preprocessing == InferenceSpec.from_model(model).preprocessing
            assert report.details["opset"] == 17
            got = runner(x)
        elif fmt == "torchscript":
            got = torch.jit.load(str(out))(x)
        elif fmt == "safetensors":
            reloaded = load_checkpoint(out)
            assert reloaded.checkpoint_meta["extra"]["class_names"] == CLASS_NAMES
            assert Preprocessing.from_model(reloaded) == InferenceSpec.from_model(model).preprocessing
            got = reloaded(x)
        else:
            from transformers import ViTForImageClassification

            hf = ViTForImageClassification.from_pretrained(out).eval()
            assert hf.config.id2label[3] == "cat"
            assert report.details["processor_max_diff_levels"] <= 1.0
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


@pytest.mark.parametrize("spec", [
    Preprocessing((32, 32), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), crop_pct=0.875, interpolation="bicubic"),
    Preprocessing((24, 40), (0.5,) * 3, (0.25,) * 3, crop_pct=0.9, interpolation="bilinear"),
    Preprocessing((32, 32), (0.5,) * 3, (0.25,) * 3, crop_pct=0.95, interpolation="bilinear", resize_mode="squash"),
])
def test_the_hf_image_processor_reproduces_the_preprocessing(spec, tmp_path):
    """transformers' AutoImageProcessor (what pipeline("image-classification") loads) on a saved config, fed PIL
    images as the pipeline feeds them, gives vitkit's preprocessing to rounding."""
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, BitImageProcessor

    BitImageProcessor(**hf_image_processor_config(spec)).save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    g = torch.Generator().manual_seed(0)
    for shape in ((3, 57, 83), (3, 101, 40), (3, spec.img_size[0], spec.img_size[1])):
        image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        pil = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
        got = processor(images=pil, return_tensors="pt")["pixel_values"][0]
        expected = spec(image)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) < 1e-5

"""Exports are verified against eager PyTorch before they are reported as done."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from tests.helpers.infer import CLASS_NAMES, save_tiny_checkpoint, tiny_model, write_images
from vitkit import load_checkpoint
from vitkit.cli import main
from vitkit.infer import ExportParityError, InferenceSpec, OnnxModel, export_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("export") / "tiny.safetensors")


def _real_batch(model, folder):
    from vitkit.data.decode import read_many_rgb

    transform = InferenceSpec.from_model(model).transform()
    return torch.stack([transform(img) for img in read_many_rgb([str(p) for p in write_images(folder, 4)])])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors", "hf"])
def test_export_is_verified_on_random_and_real_inputs(fmt, checkpoint, tmp_path):
    model = load_checkpoint(checkpoint)
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


def test_failed_parity_raises_and_writes_nothing(checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportParityError, match=r"max abs diff .* > tolerance 1e-12"):
        export_model(load_checkpoint(checkpoint), "onnx", out, atol=1e-12)  # onnxruntime differs by ~1e-7
    assert list(tmp_path.iterdir()) == []


def test_hf_refuses_what_transformers_cannot_represent(tmp_path):
    model = tiny_model(class_token=False, pooling="gap")
    with pytest.raises(ValueError, match="pooling='gap'"):
        export_model(model, "hf", tmp_path / "hf")
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(model, "tflite", tmp_path / "x")


def test_cli_export_onnx_with_int8(checkpoint, tmp_path, capsys):
    write_images(tmp_path / "imgs", 3)
    out = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out), "--check-images",
                 str(tmp_path / "imgs"), "--int8"]) == 0
    text = capsys.readouterr().out
    assert "real_images" in text and "verified: max abs diff" in text
    int8 = tmp_path / "model.int8.onnx"
    assert int8.exists()
    proto = onnx.load(str(int8))
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in proto.graph.node)
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out), "--check-images",
                 str(tmp_path / "nothing-here")]) == 2


def test_cli_export_static_int8_checks_agreement(checkpoint, tmp_path, capsys):
    write_images(tmp_path / "imgs", 3)
    write_images(tmp_path / "calib", 4)
    out = tmp_path / "model.onnx"
    base = ["export", str(checkpoint), "--format", "onnx", "--out", str(out), "--check-images", str(tmp_path / "imgs")]
    assert main(base + ["--int8", "static"]) == 2
    assert "--calib-images" in capsys.readouterr().err
    assert main(base + ["--int8", "static", "--calib-images", str(tmp_path / "calib"), "--min-agreement", "0"]) == 0
    text = capsys.readouterr().out
    assert "static, minmax calibration on 4 images" in text and "top-1 agreement with eager fp32 on 3" in text
    int8 = tmp_path / "model.int8.onnx"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    int8.unlink()
    assert main(base + ["--int8", "static", "--calib-images", str(tmp_path / "calib"), "--min-agreement", "1.01"]) == 2
    assert "< --min-agreement 1.01" in capsys.readouterr().err and not int8.exists() and out.exists()

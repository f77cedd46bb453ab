"""INT8: PyTorch dynamic quantization and ONNX Runtime dynamic quantization, saved, reloaded and evaluated."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vitkit
from tests.helpers.infer import tiny_model
from vitkit.infer import (
    OnnxModel,
    export_model,
    load_quantized,
    quantize_dynamic_int8,
    quantize_onnx_int8,
    save_quantized,
    top1_accuracy,
)


def _confident_model() -> nn.Module:
    """A model whose logits are far apart, as a trained one's are, so INT8 noise cannot flip a near-tie."""
    model = tiny_model(embed_dim=64)
    with torch.no_grad():
        model.head.weight.mul_(30)
    return model


def _labelled_batches(model: nn.Module, n_batches: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    batches = []
    with torch.no_grad():
        for _ in range(n_batches):
            x = torch.randn(16, 3, 32, 32, generator=g)
            y = model(x).argmax(-1)
            y[:4] = (y[:4] + 1) % 10  # a quarter wrong labels: fp32 accuracy is 75%, not a trivial 100%
            batches.append((x, y))
    return batches


def test_torch_int8_replaces_linears_and_keeps_accuracy():
    model = _confident_model()
    q = quantize_dynamic_int8(model)
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert any("quantized" in type(m).__module__ for m in q.modules())
    assert any(type(m) is nn.Linear for m in model.modules())  # the original is untouched
    batches = _labelled_batches(model)
    fp32, int8 = top1_accuracy(model, batches), top1_accuracy(q, batches)
    assert fp32["top1"] == 0.75 and fp32["n"] == 64
    agreement = (fp32["predictions"] == int8["predictions"]).float().mean()
    assert agreement >= 0.95 and abs(int8["top1"] - fp32["top1"]) <= 0.05


def test_torchao_int8_quantizes_linears_and_keeps_accuracy_compiled(tmp_path):
    """The compile_int8 path: torchao int8 weights in every Linear, run under torch.compile by `vitkit bench`'s own
    runner (the one compilation of it in the suite: tests/infer/test_bench.py leaves it to this test)."""
    pytest.importorskip("torchao")
    from vitkit.infer import quantize_torchao_int8
    from vitkit.infer.bench import build_runner

    model = _confident_model()
    q = quantize_torchao_int8(model)
    weights = [m.weight for m in q.modules() if isinstance(m, nn.Linear)]
    assert weights and all(type(w).__name__ == "Int8Tensor" for w in weights), [type(w).__name__ for w in weights]
    assert all(type(m.weight) is nn.Parameter for m in model.modules() if isinstance(m, nn.Linear))  # untouched
    batches = _labelled_batches(model)
    try:
        runner = build_runner("compile_int8", model, torch.device("cpu"), tmp_path, batches[0][0])
        int8 = top1_accuracy(runner, batches)
    finally:
        torch._dynamo.reset()
    fp32 = top1_accuracy(model, batches)
    agreement = (fp32["predictions"] == int8["predictions"]).float().mean()
    assert agreement >= 0.95 and abs(int8["top1"] - fp32["top1"]) <= 0.05


def test_train_engine_evaluate_accepts_a_quantized_model():
    evaluate = pytest.importorskip("vitkit.train.evaluate").evaluate
    model = _confident_model()
    batches = _labelled_batches(model, 2)
    kwargs = dict(num_classes=10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), device=torch.device("cpu"))
    fp32 = evaluate(model, batches, **kwargs)
    int8 = evaluate(quantize_dynamic_int8(model), batches, **kwargs)
    assert fp32["acc1"] == 75.0 and abs(int8["acc1"] - fp32["acc1"]) <= 5.0


def test_save_and_load_quantized(tmp_path):
    model = _confident_model()
    vitkit.save_checkpoint(model, tmp_path / "fp32.safetensors", metadata={"class_names": list("abcdefghij")})
    q = quantize_dynamic_int8(vitkit.load_checkpoint(tmp_path / "fp32.safetensors"))
    path = save_quantized(q, tmp_path / "int8.pt")
    reloaded = load_quantized(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x), q(x))
    assert reloaded.checkpoint_meta["extra"]["class_names"] == list("abcdefghij")
    assert path.stat().st_size < 0.5 * (tmp_path / "fp32.safetensors").stat().st_size
    with pytest.raises(ValueError, match="not a vitkit int8 model"):
        torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
        load_quantized(tmp_path / "other.pt")


def test_onnx_runtime_int8(tmp_path):
    model = _confident_model()
    fp32_path = export_model(model, "onnx", tmp_path / "m.onnx").path
    int8_path = quantize_onnx_int8(fp32_path, tmp_path / "m.int8.onnx")
    assert int8_path.stat().st_size < 0.5 * fp32_path.stat().st_size
    batches = _labelled_batches(model)
    fp32, int8 = top1_accuracy(model, batches), top1_accuracy(OnnxModel(int8_path), batches)
    assert (fp32["predictions"] == int8["predictions"]).float().mean() >= 0.95
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        quantize_onnx_int8(tmp_path / "missing.onnx", tmp_path / "x.onnx")


def test_calibration_reader_feeds_batches_once_and_rewinds():
    from vitkit.infer import TensorCalibrationReader

    reader = TensorCalibrationReader([torch.zeros(2, 3, 8, 8), torch.ones(1, 3, 8, 8)], "pixel_values")
    first, second = reader.get_next(), reader.get_next()
    assert first["pixel_values"].shape == (2, 3, 8, 8) and second["pixel_values"].max() == 1.0
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["pixel_values"].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="at least one calibration batch"):
        TensorCalibrationReader([])
    with pytest.raises(ValueError, match="one C, H, W"):
        TensorCalibrationReader([torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 16, 16)])


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_onnx_runtime_static_int8_is_calibrated_and_agrees(tmp_path, method):
    import onnx

    from vitkit.infer import quantize_onnx_static_int8

    model = _confident_model()
    fp32_path = export_model(model, "onnx", tmp_path / "m.onnx").path
    calibration = [x for x, _ in _labelled_batches(model, 2)]
    int8_path = quantize_onnx_static_int8(fp32_path, tmp_path / "m.s8.onnx", calibration, method=method)
    ops = {n.op_type for n in onnx.load(str(int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops
    assert not list(tmp_path.glob("*.shapes.onnx")) and not list(tmp_path.glob(".*.tmp"))  # no leftovers
    batches = _labelled_batches(model)
    fp32, int8 = top1_accuracy(model, batches), top1_accuracy(OnnxModel(int8_path), batches)
    assert (fp32["predictions"] == int8["predictions"]).float().mean() >= 0.95
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        quantize_onnx_static_int8(fp32_path, tmp_path / "x.onnx", calibration, method="kl")


def test_bench_skips_static_int8_without_calibration(tmp_path):
    from vitkit.infer.bench import BackendUnavailable, build_runner

    model = _confident_model()
    with pytest.raises(BackendUnavailable, match="calibration images"):
        build_runner("onnx_int8_static", model, torch.device("cpu"), tmp_path, torch.zeros(1, 3, 32, 32))

"""INT8 for CPU inference: PyTorch dynamic quantization of every Linear, and ONNX Runtime dynamic quantization.

Why torch.ao for eager INT8: torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` has no fast eager CPU kernel
(vit_small at batch 8: 65.7 s against 3.2 s in fp32 on this machine), while torch.ao's ``quantize_dynamic`` calls
the fbgemm/x86 int8 GEMM. torch.ao prints a deprecation notice pointing at torchao; we silence it because there is no
faster replacement for eager CPU inference. Under torch.compile it is the other way round: inductor fuses torchao's
per-token activation quantization into the int8 GEMM, which makes :func:`quantize_torchao_int8` + ``torch.compile``
a fast CPU path for ViT-S/B (``compile_int8`` in ``vitkit bench``; figures in docs/inference.md).

ONNX Runtime static INT8 (:func:`quantize_onnx_static_int8`) also fixes the activation scales ahead of time, from
calibration images run through the fp32 model, so no per-batch min/max is computed at run time. Only MatMul/Gemm
are quantized (QDQ, per-channel weights): quantizing every op (LayerNorm, Softmax, Add) made vit_tiny slower
than fp32 here, as each non-integer op is then wrapped in a dequantize/quantize pair.

A quantized model is saved as a weights-only torch file (int8 weights + scales, about a quarter of fp32) holding
the fp32 checkpoint's metadata, so ``load_quantized`` can rebuild the architecture and quantize it again in shape.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..metrics import accuracy, confusion_matrix, predicted_classes
from ..models.registry import build_from_config
from ..utils.fileio import atomic_path, load_weights_only
from .export import ExportParityError, OnnxModel

QUANTIZED_FORMAT = "vitkit-int8-dynamic"


def _require_cpu(model: nn.Module) -> None:
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 dynamic quantization runs on the CPU; move the model with .cpu() first")


def _with_metadata(quantized: nn.Module, model: nn.Module) -> nn.Module:
    """Carry the checkpoint metadata over, so a quantized copy evaluates, saves and predicts like its source."""
    for attr in ("checkpoint_meta", "data_config", "model_name"):
        if hasattr(model, attr):
            setattr(quantized, attr, getattr(model, attr))
    return quantized


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers run int8 weights x dynamically quantized int8 activations (CPU)."""
    _require_cpu(model)
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; see the module docstring
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8
        )
    return _with_metadata(quantized, model)


def quantize_torchao_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers hold torchao int8 weights and quantize their input per token at run
    time (int8 x int8 GEMM). Meant to run under ``torch.compile``: eager it is much slower than fp32 (module doc)."""
    _require_cpu(model)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as err:
        raise ImportError("the compile_int8 path needs torchao: pip install 'vitkit[int8]' (or torchao)") from err
    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return _with_metadata(quantized, model)


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """Write a model from :func:`quantize_dynamic_int8` with enough metadata to rebuild it."""
    meta = getattr(model, "checkpoint_meta", None) or {  # set by load_checkpoint; else the model contract's
        "arch": model.arch, "config": model.config, "model_name": model.model_name, "data_config": model.data_config,
        "extra": {},
    }
    payload = {"format": QUANTIZED_FORMAT, "meta": json.dumps(meta), "state_dict": model.state_dict()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_quantized(path: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_quantized` (weights-only unpickling: no arbitrary code runs)."""
    payload = load_weights_only(path, "quantized vitkit model")
    if not isinstance(payload, dict) or payload.get("format") != QUANTIZED_FORMAT:
        raise ValueError(f"{path} is not a vitkit int8 model (expected format {QUANTIZED_FORMAT!r})")
    meta = json.loads(payload["meta"])
    model = quantize_dynamic_int8(build_from_config(meta["arch"], meta["config"]))
    model.load_state_dict(payload["state_dict"])
    model.checkpoint_meta = meta
    model.data_config = meta.get("data_config", {})
    model.model_name = meta.get("model_name", "")
    return model.eval()


def quantize_onnx_int8(src: str | Path, dst: str | Path, per_channel: bool = True) -> Path:
    """ONNX Runtime dynamic quantization: int8 weights (per output channel by default), activations per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX model not found: {src}")
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel)
    return dst


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class TensorCalibrationReader:
    """Feeds preprocessed image batches (float tensors, the model's eval transform already applied) to ONNX Runtime's
    calibrator as ``{input_name: array}`` dicts; the calibrator calls ``get_next`` until it returns None."""

    def __init__(self, batches: Iterable[torch.Tensor], input_name: str = "pixel_values") -> None:
        self.input_name = input_name
        self._batches = [torch.as_tensor(b).detach().to("cpu", torch.float32).contiguous().numpy() for b in batches]
        if not self._batches:
            raise ValueError("static INT8 needs at least one calibration batch")
        shapes = {b.shape[1:] for b in self._batches}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"calibration batches must all be (B, C, H, W) with one C, H, W; got shapes {shapes}")
        self._index = 0

    def get_next(self) -> dict | None:
        if self._index >= len(self._batches):
            return None
        self._index += 1
        return {self.input_name: self._batches[self._index - 1]}

    def rewind(self) -> None:
        self._index = 0


def quantize_onnx_static_int8(
    src: str | Path, dst: str | Path, calibration: Iterable[torch.Tensor], method: str = "minmax",
    per_channel: bool = True, percentile: float = 99.999,
) -> Path:
    """ONNX Runtime static INT8 (QDQ): int8 weights per output channel, int8 activations whose scales come from
    running ``calibration`` batches (real images, preprocessed) through the fp32 model with ``method``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {CALIBRATION_METHODS}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX model not found: {src}")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    calibration = list(calibration)
    if method != "minmax" and calibration:
        # onnxruntime's histogram collector stacks each tensor's per-call outputs with np.asarray, which fails on
        # several calls ("inhomogeneous shape"); one call with every calibration image avoids it.
        calibration = [torch.cat([torch.as_tensor(b) for b in calibration])]
    reader = TensorCalibrationReader(calibration, input_name)
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    extra = {"CalibPercentile": percentile} if method == "percentile" else {}
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Shape inference first: without it the quantizer cannot type the classifier's input and refuses the head bias.
        inferred = Path(str(tmp) + ".shapes.onnx")
        try:
            quant_pre_process(str(src), str(inferred), skip_optimization=False)
            quantize_static(
                str(inferred), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                op_types_to_quantize=["MatMul", "Gemm"], activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8, calibrate_method=calibrate, extra_options=extra,
            )
        finally:
            inferred.unlink(missing_ok=True)
    return dst


INT8_MODES = ("dynamic", "static")
#: images per calibration batch fed to ONNX Runtime's calibrator
CALIBRATION_BATCH = 16


@dataclass
class Int8ExportReport:
    """An INT8 ONNX model written by :func:`export_onnx_int8`: its path, how it was quantized, its size in bytes and
    its top-1 agreement with eager fp32 on ``checked`` check images (None when no check images were given)."""

    path: Path
    kind: str
    size: int
    agreement: float | None = None
    checked: int = 0

    def describe(self) -> str:
        line = f"ONNX Runtime INT8 ({self.kind}, per-channel weights) -> {self.path} ({self.size / 1e6:.1f} MB)"
        if self.agreement is None:
            return line + "; no --check-images, so its top-1 agreement with fp32 was not measured"
        return f"{line}; top-1 agreement with eager fp32 on {self.checked} check images {100 * self.agreement:.1f}%"


def export_onnx_int8(
    onnx_path: str | Path, model: nn.Module, *, mode: str = "dynamic", calibration: torch.Tensor | None = None,
    calib_method: str = "minmax", check: torch.Tensor | None = None, min_agreement: float = 0.99,
    dst: str | Path | None = None,
) -> Int8ExportReport:
    """Quantize a verified fp32 ONNX export of ``model`` to ``dst`` (default ``<stem>.int8.onnx`` beside it) and
    check the INT8 model's top-1 agreement with eager fp32 on ``check`` (a preprocessed batch of real images).

    INT8 is held to an agreement floor, not to the fp32 export's logit tolerance: below ``min_agreement`` the INT8
    file is removed (the fp32 one is kept) and :class:`ExportParityError` is raised. ``mode="static"`` needs
    ``calibration``, a preprocessed batch of real training images (not the check images), and ``calib_method``.
    """
    if mode not in INT8_MODES:
        raise ValueError(f"unknown INT8 mode {mode!r}; expected one of {INT8_MODES}")
    src = Path(onnx_path)
    dst = Path(dst) if dst is not None else src.with_name(src.stem + ".int8.onnx")
    if mode == "static":
        if calibration is None or len(calibration) == 0:
            raise ValueError("static INT8 needs calibration images (real training images, not the check images)")
        quantize_onnx_static_int8(src, dst, list(calibration.split(CALIBRATION_BATCH)), method=calib_method)
        kind = f"static, {calib_method} calibration on {len(calibration)} images"
    else:
        quantize_onnx_int8(src, dst)
        kind = "dynamic"
    report = Int8ExportReport(dst, kind, dst.stat().st_size)
    if check is None:
        return report
    with torch.inference_mode():
        agree = float((OnnxModel(dst)(check).argmax(-1) == model(check).argmax(-1)).float().mean())
    report.agreement, report.checked = agree, len(check)
    if agree < min_agreement:
        dst.unlink()
        raise ExportParityError(f"INT8 top-1 agreement {agree:.4f} < --min-agreement {min_agreement}; "
                                f"{dst} removed (the fp32 export is kept)")
    return report


@torch.inference_mode()
def top1_accuracy(forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple[Any, Any]]) -> dict:
    """Top-1 accuracy and the predictions of ``forward`` (any backend) over (images, labels) batches."""
    confusion, predictions = None, []
    for images, labels in batches:
        logits = torch.as_tensor(forward(images)).cpu()
        predicted = predicted_classes(logits)
        batch = confusion_matrix(predicted, torch.as_tensor(labels).cpu(), num_classes=logits.shape[-1])
        confusion = batch if confusion is None else confusion + batch
        predictions.append(predicted)
    if confusion is None or int(confusion.sum()) == 0:
        raise ValueError("no batches to evaluate")
    return {"top1": accuracy(confusion), "n": int(confusion.sum()), "predictions": torch.cat(predictions)}


__all__ = [
    "CALIBRATION_METHODS", "INT8_MODES", "QUANTIZED_FORMAT", "Int8ExportReport", "TensorCalibrationReader",
    "export_onnx_int8", "load_quantized", "quantize_dynamic_int8", "quantize_onnx_int8", "quantize_onnx_static_int8",
    "quantize_torchao_int8", "save_quantized", "top1_accuracy",
]

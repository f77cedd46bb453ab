"""Inference and deployment: batched prediction, verified exports, INT8, benchmarks and an HTTP service."""

from .export import EXPORT_FORMATS, ExportParityError, ExportReport, OnnxModel, export_model
from .predict import Predictor, expand_inputs, format_predictions, predict_paths
from .preprocess import InferenceSpec
from .quantize import (
    TensorCalibrationReader,
    load_quantized,
    quantize_dynamic_int8,
    quantize_onnx_int8,
    quantize_onnx_static_int8,
    quantize_torchao_int8,
    save_quantized,
    top1_accuracy,
)

__all__ = [
    "EXPORT_FORMATS", "ExportParityError", "ExportReport", "InferenceSpec", "OnnxModel", "Predictor",
    "expand_inputs", "export_model", "format_predictions", "load_quantized", "predict_paths", "quantize_dynamic_int8",
    "quantize_onnx_int8", "quantize_onnx_static_int8", "quantize_torchao_int8", "save_quantized",
    "TensorCalibrationReader", "top1_accuracy",
]

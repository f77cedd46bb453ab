"""The names the commands offer as choices, copied from the library modules that define them.

Why copies: those modules import torch, and `vitkit --help` must answer without importing it (building the parser
needs every ``choices=`` list up front). tests/cli/test_parser.py checks each copy against its source, so a name
added to the library and not here fails the tests instead of silently missing from the command line.
"""

from __future__ import annotations

#: vitkit.infer.bench.BACKENDS
BENCH_BACKENDS = ("eager_fp32", "eager_bf16", "compile_fp32", "compile_bf16", "onnx_fp32", "onnx_int8",
                  "onnx_int8_static", "torch_int8", "compile_int8")
#: vitkit.infer.export.EXPORT_FORMATS and DEFAULT_ATOL
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors", "hf")
EXPORT_DEFAULT_ATOL = 1e-4
#: vitkit.infer.predict.PRECISIONS: what predict, eval and serve run in
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: vitkit.infer.quantize.CALIBRATION_METHODS
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
#: vitkit.data.cache.ENV_CACHE_DIR
ENV_CACHE_DIR = "VITKIT_CACHE"
#: vitkit.plan.memory.PRECISIONS and OPTIMIZERS (its keys)
PLAN_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PLAN_OPTIMIZERS = ("adamw", "sgd")
#: vitkit.plan.planner.STRATEGIES
PLAN_STRATEGIES = ("single", "ddp", "fsdp")
#: vitkit.viz.attention.HEAD_FUSIONS
HEAD_FUSIONS = ("mean", "max", "min")
#: the values of vitkit.train.config.TrainConfig.precision
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16", "auto")

__all__ = [
    "BENCH_BACKENDS", "EXPORT_FORMATS", "EXPORT_DEFAULT_ATOL", "INFERENCE_PRECISIONS", "CALIBRATION_METHODS",
    "ENV_CACHE_DIR", "PLAN_PRECISIONS", "PLAN_OPTIMIZERS", "PLAN_STRATEGIES", "HEAD_FUSIONS", "TRAIN_PRECISIONS",
]

"""`vitkit predict | export | bench | serve`: each command calls one function of vitkit.infer.

predict, bench and serve first keep freed memory for reuse (vitkit.utils.allocator.retain_for_inference).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..utils.allocator import retain_for_inference


def cmd_predict(args: argparse.Namespace) -> int:
    retain_for_inference()
    from ..infer.predict import Predictor, expand_inputs, format_predictions, predict_paths

    paths, problems = expand_inputs(args.inputs)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.strict and problems:
        print(f"error: --strict: {len(problems)} input(s) missing or unreadable", file=sys.stderr)
        return 2
    if not paths:
        print("error: no images to predict", file=sys.stderr)
        return 2
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision)
    run = predict_paths(predictor, paths, batch_size=args.batch_size, topk=args.topk, strict=args.strict)
    for failure in run.failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
    text = format_predictions(run.predictions, args.format)
    if args.output:
        from ..utils.fileio import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    else:
        print(text)
    if not run.predictions:
        print(f"error: none of the {len(paths)} images could be read", file=sys.stderr)
        return 2
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..infer.export import export_model
    from ..infer.predict import load_image_batch
    from ..infer.quantize import export_onnx_int8
    from ..weights import load_model

    int8 = args.int8 if args.format == "onnx" else None
    if int8 == "static" and not args.calib_images:
        raise ValueError("--int8 static needs --calib-images (real training images, not the check images)")
    model = load_model(args.checkpoint)
    check = load_image_batch(model, args.check_images, args.max_check_images) if args.check_images else None
    report = export_model(
        model, args.format, args.out, check_inputs=check, atol=args.atol, opset=args.opset, exporter=args.exporter
    )
    print(report.describe())
    if args.int8 and not int8:
        print("warning: --int8 applies to --format onnx only; no INT8 model written", file=sys.stderr)
    elif int8:
        calibration = load_image_batch(model, args.calib_images, args.max_calib_images) if int8 == "static" else None
        print(export_onnx_int8(
            args.out, model, mode=int8, calibration=calibration, calib_method=args.calib_method, check=check,
            min_agreement=args.min_agreement,
        ).describe())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ..infer.bench import format_bench_table, run_bench
    from ..utils.fileio import atomic_write_text
    from ..weights import load_model

    retain_for_inference()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # onnxruntime sessions follow torch's setting
    model = load_model(args.model)
    backends = args.backends.split(",") if args.backends else None
    kwargs = {"backends": backends} if backends else {}
    result = run_bench(
        model, batch_size=args.batch_size, warmup=args.warmup, reps=args.reps, latency_reps=args.latency_reps,
        device=args.device, log=None, **kwargs,
    )
    result["command"] = " ".join(["vitkit", *sys.argv[1:]])
    print(format_bench_table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..infer.serve import ServeConfig, serve

    retain_for_inference()
    config = ServeConfig(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
        topk=args.topk,
    )
    serve(args.checkpoint, host=args.host, port=args.port, config=config, device=args.device,
          precision=args.precision, log_level=args.log_level)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..infer.bench import BACKENDS
    from ..infer.export import DEFAULT_ATOL, EXPORT_FORMATS
    from ..infer.predict import PRECISIONS
    from ..infer.quantize import CALIBRATION_METHODS

    p = subparsers.add_parser("predict", help="top-k labels for images, files, folders or globs")
    p.add_argument("checkpoint", help="a vitkit .safetensors checkpoint")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--output", help="write the predictions to this file instead of stdout")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16/fp16 = autocast; int8 = dynamic quantization of Linear layers (CPU)")
    p.add_argument("--strict", action="store_true", help="fail on the first unreadable image instead of skipping")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("export", help="export to ONNX, TorchScript, safetensors or a Hugging Face folder, verified")
    p.add_argument("checkpoint", help="a vitkit checkpoint, or a registered model name")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument("--out", required=True, help="output file (a folder for --format hf)")
    p.add_argument("--check-images", nargs="+", help="real images (files/folders/globs) for the parity check")
    p.add_argument("--max-check-images", type=int, default=16)
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="max abs logit difference allowed (fp32)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 17, or 18 with --exporter dynamo)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript", help="ONNX exporter")
    p.add_argument("--int8", nargs="?", const="dynamic", choices=("dynamic", "static"),
                   help="ONNX only: also write an ONNX Runtime INT8 model beside it (bare --int8 = dynamic)")
    p.add_argument("--calib-images", nargs="+", help="--int8 static: real images that calibrate activation ranges")
    p.add_argument("--max-calib-images", type=int, default=256)
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="minmax")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="--int8 with --check-images: fail below this top-1 agreement with fp32")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("bench", help="latency and throughput across eager, compile, ONNX Runtime and INT8")
    p.add_argument("model", help="a vitkit checkpoint or a registered model name")
    p.add_argument("--batch-size", type=int, default=32, help="batch for the throughput figure")
    p.add_argument("--backends", help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5, help="repetitions of the throughput batch (median reported)")
    p.add_argument("--latency-reps", type=int, default=20, help="batch-1 calls for p50/p95")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="intra-op CPU threads for every backend (default: torch's)")
    p.add_argument("--json", help="write the full result as JSON here")
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser("serve", help="HTTP prediction service with micro-batching and /metrics")
    p.add_argument("checkpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024, help="largest request body")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest decoded image (width x height)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

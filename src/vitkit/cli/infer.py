"""`vitkit predict | export | bench | serve`: each command calls one function of vitkit.infer.

predict, bench and serve first keep freed memory for reuse (vitkit.utils.allocator.retain_for_inference).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..utils.allocator import retain_for_inference
from .arguments import (
    existing_file,
    inference_device,
    non_negative_int,
    positive_float,
    positive_int,
    tcp_port,
    writable_file,
    writable_folder,
)
from .choices import BENCH_BACKENDS, CALIBRATION_METHODS, EXPORT_DEFAULT_ATOL, EXPORT_FORMATS, INFERENCE_PRECISIONS


def cmd_predict(args: argparse.Namespace) -> int:
    retain_for_inference()
    from ..infer.predict import Predictor, expand_inputs, format_predictions, predict_paths

    if args.out is not None:
        writable_file(args.out, "--out", inputs=(args.checkpoint,))
    device = inference_device(args.device, args.precision)
    paths, problems = expand_inputs(args.inputs)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.strict and problems:
        print(f"error: --strict: {len(problems)} input(s) missing or unreadable", file=sys.stderr)
        return 2
    if not paths:
        print("error: no images to predict", file=sys.stderr)
        return 2
    predictor = Predictor.from_checkpoint(args.checkpoint, device=device, precision=args.precision)
    run = predict_paths(predictor, paths, batch_size=args.batch_size, topk=args.topk, strict=args.strict)
    for failure in run.failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
    text = format_predictions(run.predictions, "json" if args.json else args.format)
    if args.out:
        from ..utils.fileio import atomic_write_text

        atomic_write_text(args.out, text + "\n")
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
    check_export_destination(args.out, args.format, args.checkpoint, args.force)
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


#: the options of `vitkit serve` that set a ServeConfig field of the same name; those not given keep its default
SERVE_LIMITS = ("max_batch", "max_wait_ms", "max_bytes", "max_pixels", "topk", "body_timeout_s", "large_decodes")


def check_export_destination(out: str, fmt: str, checkpoint: str, force: bool) -> None:
    """Before the export: never write over the input checkpoint, an existing output only with ``--force``, and a
    file name (a folder for ``--format hf``) that can be written."""
    if fmt != "hf":
        writable_file(out, "--out", force=force, inputs=(checkpoint,))
        return
    folder = writable_folder(out, "--out")
    if Path(checkpoint).exists() and Path(checkpoint).resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"--out {folder} holds the input {checkpoint}; export to another folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise ValueError(f"--out {folder} is a folder that is not empty; pass --force to write into it")


def cmd_bench(args: argparse.Namespace) -> int:
    from ..infer.bench import format_bench_table, run_bench
    from ..utils.fileio import atomic_write_text
    from ..weights import load_model

    retain_for_inference()
    if args.out is not None:
        writable_file(args.out, "--out", inputs=(args.model,))
    device = inference_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # onnxruntime sessions follow torch's setting
    model = load_model(args.model)
    backends = args.backends.split(",") if args.backends else None
    kwargs = {"backends": backends} if backends else {}
    result = run_bench(
        model, batch_size=args.batch_size, warmup=args.warmup, reps=args.reps, latency_reps=args.latency_reps,
        device=device, log=None, **kwargs,
    )
    result["command"] = " ".join(["vitkit", *sys.argv[1:]])
    text = json.dumps(result, indent=2)
    print(text if args.json else format_bench_table(result))
    if args.out:
        atomic_write_text(args.out, text + "\n")
        print(f"wrote {args.out}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..infer.serve import ServeConfig, serve

    retain_for_inference()
    limits = {name: getattr(args, name) for name in SERVE_LIMITS if getattr(args, name) is not None}
    config = ServeConfig(**limits)
    existing_file(args.checkpoint, "checkpoint")
    serve(args.checkpoint, host=args.host, port=args.port, config=config,
          device=inference_device(args.device, args.precision),
          precision=args.precision, log_level=args.log_level)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="top-k labels for images, files, folders or globs")
    p.add_argument("checkpoint", help="a vitkit .safetensors checkpoint")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--topk", type=positive_int, default=5, help="labels per image")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="how predictions are written")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--out", "--output", dest="out",
                   help="write the predictions to this file (default: print them)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (CUDA when present; int8: cpu)")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32",
                   help="bf16/fp16 = autocast; int8 = dynamic quantization of Linear layers (CPU)")
    p.add_argument("--strict", action="store_true", help="fail on the first unreadable image instead of skipping")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("export", help="export to ONNX, TorchScript, safetensors or a Hugging Face folder, verified")
    p.add_argument("checkpoint", help="a vitkit checkpoint, or a registered model name")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True, help="what to write")
    p.add_argument("--out", required=True, help="output file (a folder for --format hf); never the input checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing --out (never the input checkpoint)")
    p.add_argument("--check-images", nargs="+",
                   help="real images (files/folders/globs) for the parity check (default: seeded random inputs only)")
    p.add_argument("--max-check-images", type=positive_int, default=16, help="at most this many check images")
    p.add_argument("--atol", type=positive_float, default=EXPORT_DEFAULT_ATOL,
                   help="max abs logit difference allowed (fp32)")
    p.add_argument("--opset", type=positive_int, help="ONNX opset (default 17, or 18 with --exporter dynamo)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript", help="ONNX exporter")
    p.add_argument("--int8", nargs="?", const="dynamic", choices=("dynamic", "static"),
                   help="ONNX only: also write an ONNX Runtime INT8 model beside it (bare --int8 = dynamic; "
                        "default: none)")
    p.add_argument("--calib-images", nargs="+",
                   help="--int8 static: real images that calibrate activation ranges (default: none; required there)")
    p.add_argument("--max-calib-images", type=positive_int, default=256, help="at most this many calibration images")
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="minmax",
                   help="--int8 static: how activation ranges are chosen")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="--int8 with --check-images: fail below this top-1 agreement with fp32")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("bench", help="latency and throughput across eager, compile, ONNX Runtime and INT8")
    p.add_argument("model", help="a vitkit checkpoint or a registered model name")
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch for the throughput figure")
    p.add_argument("--backends", help=f"comma-separated subset of {','.join(BENCH_BACKENDS)} (default: all but "
                                      "compile_bf16, those this machine runs)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed calls first")
    p.add_argument("--reps", type=positive_int, default=5,
                   help="repetitions of the throughput batch (median reported)")
    p.add_argument("--latency-reps", type=positive_int, default=20, help="batch-1 calls for p50/p95")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (CUDA when present)")
    p.add_argument("--threads", type=positive_int, help="intra-op CPU threads for every backend (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of the table")
    p.add_argument("--out", help="also write the full result as JSON to this file (default: none)")
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser("serve", help="HTTP prediction service with micro-batching and /metrics")
    p.add_argument("checkpoint", help="a vitkit .safetensors checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=tcp_port, default=8000, help="TCP port (0: any free port)")
    service_default = "(default: the service's, vitkit.infer.serve.ServeConfig)"
    p.add_argument("--max-batch", type=positive_int, help=f"largest micro-batch {service_default}")
    p.add_argument("--max-wait-ms", type=float,
                   help=f"how long a request waits for others to join its batch {service_default}")
    p.add_argument("--max-bytes", type=positive_int, help=f"largest request body {service_default}")
    p.add_argument("--max-pixels", type=positive_int, help=f"largest decoded image (width x height) {service_default}")
    p.add_argument("--topk", type=positive_int, help=f"labels per answer unless the request asks {service_default}")
    p.add_argument("--body-timeout", dest="body_timeout_s", type=positive_float,
                   help=f"seconds a request body may take to arrive before the answer is 408 {service_default}")
    p.add_argument("--large-decodes", type=positive_int,
                   help=f"images over 1920x1080 pixels decoding at once (half the cores) {service_default}")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (CUDA when present; int8: cpu)")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32",
                   help="bf16/fp16 = autocast; int8 = dynamic quantization of Linear layers (CPU)")
    p.add_argument("--log-level", default="info", help="uvicorn's log level")
    p.set_defaults(func=cmd_serve)

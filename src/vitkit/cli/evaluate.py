"""`vitkit eval`: top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .arguments import existing_file, inference_device, positive_int, writable_folder
from .choices import INFERENCE_PRECISIONS


def cmd_eval(args: argparse.Namespace) -> int:
    from ..train import ConfigError, evaluate_checkpoint, parse_override
    from ..utils.allocator import retain_for_inference

    retain_for_inference()
    existing_file(args.checkpoint, "checkpoint")
    out = args.out or str(Path(args.checkpoint).parent / f"eval-{args.split}")
    writable_folder(out, "--out")
    device = inference_device(args.device, args.precision)
    try:
        options = dict(parse_override(text) for text in args.data_arg)
    except ConfigError as err:
        raise ConfigError(f"--data-arg: {err}") from None
    transform = None
    precision = args.precision
    if precision == "int8":  # dynamic INT8 Linear layers on the CPU; the rest of the model runs in fp32
        from ..infer.quantize import quantize_dynamic_int8

        transform, precision = quantize_dynamic_int8, "fp32"
    result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, root=args.root,
                                 batch_size=args.batch_size, precision=precision, device=device, out_dir=out,
                                 dataset_kwargs=options, model_transform=transform, hflip_tta=args.hflip_tta,
                                 val_fraction=args.val_fraction, seed=args.seed)
    from ..viz.figures import plot_confusion

    result["confusion_png"] = str(Path(out) / "confusion.png")
    plot_confusion(result["confusion"], list(result["per_class_acc"]), result["confusion_png"])
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.data} {args.split} ({result['split_source']}): top-1 {result['acc1']:.2f}%  "
          f"top-5 {result['acc5']:.2f}%  "
          f"loss {result['loss']:.4f}  ({result['count']} images)")
    for name, acc in result["per_class_acc"].items():
        print(f"  {name:20s} {acc:6.2f}%")
    print(f"confusion matrix: {result['confusion_png']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="a vitkit .safetensors file (e.g. runs/<run>/best.safetensors)")
    p.add_argument("--data", required=True, help="digits, synthetic, cifar10, or a folder")
    p.add_argument("--root", help="root folder for cifar10/cifar100 python batches (default: <cache dir>/downloads)")
    p.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the dataset kind, as data.kwargs in training (e.g. num_samples=128; "
                        "repeatable; default: none)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="the part of the training images carved out as validation, for data without a val split "
                        "(default: as the checkpoint's training run carved it)")
    p.add_argument("--seed", type=int, help="the seed the validation split was carved with (default: the "
                                            "checkpoint's training seed)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass")
    p.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS,
                   help="bf16/fp16 = autocast; int8: dynamic INT8 quantization of the Linear layers (CPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (CUDA when present; int8: cpu)")
    p.add_argument("--hflip-tta", action="store_true",
                   help="test-time augmentation: average the logits of each image and its mirror image")
    p.add_argument("--out", help="folder for eval.json and confusion.png (default: <checkpoint dir>/eval-<split>)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_eval)

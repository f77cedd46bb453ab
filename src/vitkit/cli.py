"""`vitkit <command>`: parses arguments, then calls one function of a package. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
import time


def cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import list_models
    from .plan.flops import model_summary

    rows = [model_summary(n) for n in list_models(args.pattern)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':36s} {'params (M)':>11s} {'GFLOPs':>9s} {'input':>9s} {'classes':>8s}")
    for r in rows:
        size = f"{r['img_size'][0]}x{r['img_size'][1]}"
        print(f"{r['name']:36s} {r['params_m']:11.2f} {r['gflops']:9.3f} {size:>9s} {r['num_classes']:8d}")
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    """Forward every registered model once on a random image: a quick proof the install works."""
    import torch

    from .models.registry import create_model, get_model_spec, list_models

    torch.manual_seed(0)
    for name in list_models(args.pattern):
        model = create_model(name).eval()
        cfg = model.config
        size = cfg.get("img_size") or get_model_spec(name).reference_size
        x = torch.randn(1, cfg["in_chans"], *((size, size) if isinstance(size, int) else size))
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(x)
        print(f"{name:36s} out {tuple(out.shape)!s:12s} {1e3 * (time.perf_counter() - t0):8.1f} ms", flush=True)
        if not torch.isfinite(out).all():
            print(f"error: {name} produced non-finite outputs", file=sys.stderr)
            return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Resolve the config (default < recipe < shorthands < --set) and hand it to the training engine."""
    from pathlib import Path

    from .train import ConfigError, load_config, train
    from .train.checkpoint import resolve_resume

    shorthands = [f"{key}={value}" for key, value in (
        ("data.name", args.data), ("model.name", args.model), ("train.epochs", args.epochs),
        ("checkpoint.out_dir", args.out_dir), ("checkpoint.resume", args.resume)) if value is not None]
    recipe = args.recipe
    try:
        if recipe is None and args.resume and args.resume != "auto":  # continue a run with the config it was started with
            recipe = resolve_resume(args.resume, "", "").parent / "config.yaml"
        cfg = load_config(recipe, shorthands + list(args.set))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    summary = train(cfg)
    if summary["rank"] == 0 and summary.get("test_acc1") is not None:  # under torchrun, rank 0 reports
        print(f"test accuracy: {summary['test_acc1']:.2f}% ({summary['test_images']} images, best "
              f"{cfg.checkpoint.metric} {summary[f'best_{cfg.checkpoint.metric}']:.4g}, {summary['wall_time_s']:.1f} s) "
              f"-> {Path(summary['run_dir'])}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train import ConfigError, evaluate_checkpoint, parse_override
    from .utils.allocator import retain_for_inference

    retain_for_inference()
    out = args.out or str(Path(args.checkpoint).parent / f"eval-{args.split}")
    try:
        options = dict(parse_override(text) for text in args.data_arg)
    except ConfigError as err:
        print(f"error: --data-arg: {err}", file=sys.stderr)
        return 2
    transform = None
    precision = args.precision
    if precision == "int8":  # dynamic INT8 Linear layers on the CPU; the rest of the model runs in fp32
        from .infer.quantize import quantize_dynamic_int8

        transform, precision = quantize_dynamic_int8, "fp32"
    result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, root=args.root,
                                 batch_size=args.batch_size, precision=precision, device=args.device, out_dir=out,
                                 dataset_kwargs=options, model_transform=transform, hflip_tta=args.hflip_tta)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.data} {args.split}: top-1 {result['acc1']:.2f}%  top-5 {result['acc5']:.2f}%  "
          f"loss {result['loss']:.4f}  ({result['count']} images)")
    for name, acc in result["per_class_acc"].items():
        print(f"  {name:20s} {acc:6.2f}%")
    print(f"confusion matrix: {result['confusion_png']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitkit", description="Vision Transformers on one GPU or a CPU")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with params and GFLOPs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vit_*_patch16_224'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("smoke", help="forward every registered model once on a random image")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=cmd_smoke)

    p = sub.add_parser("train", help="train a model; with no arguments: a small ViT on digits in about a minute")
    p.add_argument("--recipe", help="YAML recipe (recipes/*.yaml); keys not in it keep the embedded default")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key, e.g. --set optim.lr=1e-3 (repeatable; applied last)")
    p.add_argument("--data", help="shorthand for --set data.name=... (digits, synthetic, cifar10, or a folder)")
    p.add_argument("--model", help="shorthand for --set model.name=...")
    p.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=...")
    p.add_argument("--out-dir", help="shorthand for --set checkpoint.out_dir=...")
    p.add_argument("--resume", help="a last.pt, a run directory, or 'auto' (newest run of this run_name)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="a vitkit .safetensors file (e.g. runs/<run>/best.safetensors)")
    p.add_argument("--data", required=True, help="digits, synthetic, cifar10, or a folder")
    p.add_argument("--root", help="root folder for cifar10/cifar100 python batches")
    p.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the dataset kind, as data.kwargs in training (e.g. num_samples=128)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "int8"),
                   help="int8: dynamic INT8 quantization of the Linear layers (CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--hflip-tta", action="store_true",
                   help="test-time augmentation: average the logits of each image and its mirror image")
    p.add_argument("--out", help="folder for eval.json and confusion.png (default: <checkpoint dir>/eval-<split>)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_eval)

    from .data.cache import add_cache_arguments, build_cache_cli
    from .infer.cli_commands import add_subcommands as add_infer_commands
    from .plan.cli_commands import add_subcommands as add_plan_commands
    from .viz.cli_commands import add_subcommands as add_viz_commands

    p = sub.add_parser("cache", help="decode a dataset once into the uint8 memory-mapped cache (with img/s)")
    add_cache_arguments(p).set_defaults(func=build_cache_cli)
    add_infer_commands(sub)
    add_plan_commands(sub)
    add_viz_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

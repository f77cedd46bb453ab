"""`vitkit train`: resolve the config (default < recipe < shorthands < --set), train, then write the run report.

The shorthands are the names timm's train.py users type (``--lr``, ``-b/--batch-size``, ``--img-size``,
``--pretrained``, ``--precision``/``--amp``, ``--workers``, ``--seed``); each sets one config key, before the
``--set`` overrides, so ``--set`` always has the last word.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .arguments import non_negative_int, positive_float, positive_int, writable_folder
from .choices import TRAIN_PRECISIONS

#: option (its argparse dest) -> the config key it sets
SHORTHANDS = (
    ("data", "data.name"), ("model", "model.name"), ("pretrained", "model.pretrained"), ("epochs", "train.epochs"),
    ("lr", "optim.lr"), ("batch_size", "data.batch_size"), ("img_size", "data.img_size"),
    ("precision", "train.precision"), ("workers", "data.num_workers"), ("seed", "train.seed"),
    ("out_dir", "checkpoint.out_dir"), ("resume", "checkpoint.resume"),
)


def shorthand_settings(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(config key, value) of each shorthand given on the command line."""
    return [(key, getattr(args, dest)) for dest, key in SHORTHANDS if getattr(args, dest) is not None]


def amp_precision(device: str) -> str:
    """What ``--amp`` means on a device: bf16 on a GPU that has it (fp16 on older ones, with a GradScaler), bf16 on a
    CPU (where fp16 autocast is very slow)."""
    import torch

    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import load_config, parse_override, train
    from ..train.checkpoint import resolve_resume

    recipe = args.recipe
    if recipe is None and args.resume and args.resume != "auto":  # continue a run with the config it was started with
        recipe = resolve_resume(args.resume, "", "").parent / "config.yaml"
    settings = shorthand_settings(args)
    cfg = load_config(recipe, args.set, settings=settings)
    if args.amp and not any(parse_override(text)[0] == "train.precision" for text in args.set):
        cfg = load_config(recipe, args.set, settings=[*settings, ("train.precision", amp_precision(cfg.train.device))])
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    check_destinations(cfg)
    summary = train(cfg)
    if summary["rank"] != 0:  # under torchrun, rank 0 reports
        return 0
    if cfg.log.curves or cfg.log.report:
        write_figures(cfg, summary["run_dir"])
    if summary.get("test_acc1") is not None:
        print(f"test accuracy: {summary['test_acc1']:.2f}% ({summary['test_images']} images, best "
              f"{cfg.checkpoint.metric} {summary[f'best_{cfg.checkpoint.metric}']:.4g}, {summary['wall_time_s']:.1f} s) "
              f"-> {Path(summary['run_dir'])}")
    return 0


def check_destinations(cfg) -> None:
    """Before anything is decoded or trained: the folders the run will write must be creatable, and a CUDA device
    asked for must exist (each failure one line naming the key)."""
    writable_folder(cfg.checkpoint.out_dir, "checkpoint.out_dir")
    if cfg.data.cache_dir is not None:
        writable_folder(cfg.data.cache_dir, "data.cache_dir")
    if cfg.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("train.device='cuda' but CUDA is not available on this machine; use cpu or auto")


def write_figures(cfg, run_dir: str | Path) -> list[Path]:
    """curves.png and report.html of a finished run (as log.curves / log.report ask), from its directory, its best
    weights and the run's validation split."""
    from ..runtime import resolve_device
    from ..train import build_datasets
    from ..viz.report import write_run_outputs

    val = build_datasets(cfg)[1] if cfg.log.report else None
    return write_run_outputs(run_dir, val, curves=cfg.log.curves, report=cfg.log.report,
                             device=resolve_device(cfg.train.device))


#: the embedded default's value of each shorthand's key, for the help text (tests/cli/test_parser.py checks them
#: against vitkit.train.config.Config, which the parser cannot import without importing torch)
EMBEDDED_DEFAULTS = {
    "data.name": "digits", "model.name": "vit_digits_patch2_8", "model.pretrained": "none", "train.epochs": "40",
    "optim.lr": "0.002", "data.batch_size": "32", "data.img_size": "the data's own size", "train.precision": "fp32",
    "data.num_workers": "automatic", "train.seed": "0", "checkpoint.out_dir": "runs",
}


def recipe_default(key: str) -> str:
    return f"(default: the recipe's, else {EMBEDDED_DEFAULTS[key]})"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model; with no arguments: a small ViT on digits in about a minute")
    p.add_argument("--recipe", help="YAML recipe (recipes/*.yaml); keys not in it keep the embedded default "
                                    "(default: none, the embedded default config: a small ViT on digits)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key, e.g. --set optim.lr=1e-3 (repeatable; applied last; default: none)")
    p.add_argument("--data", help=f"data.name: digits, synthetic, cifar10, or a folder {recipe_default('data.name')}")
    p.add_argument("--model", help=f"model.name, a registered model (vitkit models) {recipe_default('model.name')}")
    p.add_argument("--pretrained", metavar="WEIGHTS",
                   help=f"model.pretrained: weights to start from (see vitkit.create_model) {recipe_default('model.pretrained')}")
    p.add_argument("--epochs", type=positive_int, help=f"train.epochs {recipe_default('train.epochs')}")
    p.add_argument("--lr", type=positive_float, help=f"optim.lr, the peak learning rate {recipe_default('optim.lr')}")
    p.add_argument("-b", "--batch-size", type=positive_int,
                   help=f"data.batch_size, images per forward pass across all processes {recipe_default('data.batch_size')}")
    p.add_argument("--img-size", type=positive_int,
                   help=f"data.img_size, the training resolution {recipe_default('data.img_size')}")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--precision", choices=TRAIN_PRECISIONS,
                           help=f"train.precision; bf16/fp16 = autocast {recipe_default('train.precision')}")
    precision.add_argument("--amp", action="store_true",
                           help="mixed precision for the device: train.precision=bf16 (fp16 on a GPU without bf16)")
    p.add_argument("--workers", type=non_negative_int,
                   help=f"data.num_workers, loader / decode processes {recipe_default('data.num_workers')}")
    p.add_argument("--seed", type=int, help=f"train.seed {recipe_default('train.seed')}")
    p.add_argument("--out-dir", help=f"checkpoint.out_dir, where run directories go {recipe_default('checkpoint.out_dir')}")
    p.add_argument("--resume", help="checkpoint.resume: a last.pt, a run directory, or 'auto' (newest run of this "
                                    "run_name) (default: start a new run)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_train)

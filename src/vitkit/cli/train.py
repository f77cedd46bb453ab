"""`vitkit train`: resolve the config (default < recipe < shorthands < --set), train, then write the run report."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import load_config, train
    from ..train.checkpoint import resolve_resume

    shorthands = [f"{key}={value}" for key, value in (
        ("data.name", args.data), ("model.name", args.model), ("train.epochs", args.epochs),
        ("checkpoint.out_dir", args.out_dir), ("checkpoint.resume", args.resume)) if value is not None]
    recipe = args.recipe
    if recipe is None and args.resume and args.resume != "auto":  # continue a run with the config it was started with
        recipe = resolve_resume(args.resume, "", "").parent / "config.yaml"
    cfg = load_config(recipe, shorthands + list(args.set))
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
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


def write_figures(cfg, run_dir: str | Path) -> list[Path]:
    """curves.png and report.html of a finished run (as log.curves / log.report ask), from its directory, its best
    weights and the run's validation split."""
    from ..runtime import resolve_device
    from ..train import build_datasets
    from ..viz.report import write_run_outputs

    val = build_datasets(cfg)[1] if cfg.log.report else None
    return write_run_outputs(run_dir, val, curves=cfg.log.curves, report=cfg.log.report,
                             device=resolve_device(cfg.train.device))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model; with no arguments: a small ViT on digits in about a minute")
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

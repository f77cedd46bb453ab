"""`vitkit viz attention | posembed | filters | report`: each command draws with vitkit.viz functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .arguments import positive_int
from .choices import HEAD_FUSIONS


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '224x320' -> (224, 320)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW (e.g. 224 or 224x320), got {text!r}")
    return parts[0], parts[1]


def cmd_attention(args: argparse.Namespace) -> int:
    from ..infer.predict import expand_inputs
    from ..viz.attention import write_attention_figures
    from ..weights import load_model

    paths, problems = expand_inputs(args.images)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    figures = write_attention_figures(
        load_model(args.checkpoint), paths, args.out, size=args.size, head_fusion=args.head_fusion,
        discard_ratio=args.discard_ratio, dpi=args.dpi, device=args.device,
    )
    for path, reason in figures.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for path, png in figures.written:
        print(f"{path} -> {png}")
    if not figures.written:
        print("error: no image could be read", file=sys.stderr)
        return 2
    return 0


def cmd_posembed(args: argparse.Namespace) -> int:
    from ..viz.embeddings import write_position_similarity
    from ..weights import load_model

    dst = write_position_similarity(load_model(args.checkpoint), args.out, label=Path(args.checkpoint).name,
                                    size=args.size, dpi=args.dpi)
    print(f"-> {dst}")
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    from ..viz.embeddings import write_filter_components
    from ..weights import load_model

    dst = write_filter_components(load_model(args.checkpoint), args.out, count=args.count,
                                  label=Path(args.checkpoint).name, dpi=args.dpi)
    print(f"-> {dst}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..viz.report import rewrite_run_report

    print(f"-> {rewrite_run_report(args.run_dir, checkpoint=args.checkpoint, device=args.device)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    viz = subparsers.add_parser("viz", help="pictures of a model (attention, position embeddings, filters), run reports")
    sub = viz.add_subparsers(dest="viz_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="a vitkit .safetensors checkpoint (or a registered model name: random weights)")
        p.add_argument("--out", default="viz", help="folder for the PNG files (default: ./viz)")
        p.add_argument("--dpi", type=positive_int, default=100, help="resolution of the PNG files")

    p = sub.add_parser("attention", help="attention rollout over each image + the last block's per-head maps")
    common(p)
    p.add_argument("images", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--head-fusion", choices=HEAD_FUSIONS, default="mean", help="how the rollout combines heads")
    p.add_argument("--discard-ratio", type=float, default=0.0,
                   help="fraction of the weakest attention entries dropped per block before the rollout (e.g. 0.9)")
    p.add_argument("--size", type=parse_size, help="input size N or HxW (position embedding resampled); default: "
                   "the checkpoint's")
    p.add_argument("--device", default="cpu", help="where the model runs")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("posembed", help="cosine similarity of each patch's position embedding with all others")
    common(p)
    p.add_argument("--size", type=parse_size,
                   help="draw the embedding resampled to this input size (default: the checkpoint's)")
    p.set_defaults(func=cmd_posembed)

    p = sub.add_parser("filters", help="first principal components of the patch-embedding filters")
    common(p)
    p.add_argument("--count", type=positive_int, default=28, help="number of components (the ViT paper shows 28)")
    p.set_defaults(func=cmd_filters)

    p = sub.add_parser("report", help="(re)write report.html of a training run directory")
    p.add_argument("run_dir", help="a run directory (holds config.yaml, best.safetensors, metrics.jsonl ...)")
    p.add_argument("--checkpoint", help="weights to report on (default: RUN_DIR/best.safetensors)")
    p.add_argument("--device", default="cpu", help="where the model runs")
    p.set_defaults(func=cmd_report)

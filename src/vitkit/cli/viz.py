"""`vitkit viz attention | posembed | filters | report`: each command draws with vitkit.viz functions."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


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


@contextlib.contextmanager
def _unsupported_model_is_bad_input() -> Iterator[None]:
    """vitkit.viz raises TypeError for a model kind it cannot draw (NaViT attention, a fixed input size): that is the
    user's choice of checkpoint, an expected failure, so it reaches `vitkit`'s error handler as a ValueError."""
    try:
        yield
    except TypeError as err:
        raise ValueError(str(err)) from None


def _out_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def cmd_attention(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ..data.decode import BadImageError, read_many_rgb
    from ..infer.predict import expand_inputs
    from ..infer.preprocess import InferenceSpec
    from ..viz.attention import attention_maps, check_attention_support, plot_attention, set_resolution
    from ..weights import load_model

    paths, problems = expand_inputs(args.images)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    model = load_model(args.checkpoint).to(args.device).eval()
    with _unsupported_model_is_bad_input():
        check_attention_support(model)
    spec = InferenceSpec.from_model(model)
    if args.size:
        with _unsupported_model_is_bad_input():
            set_resolution(model, args.size)
        spec = dataclasses.replace(spec, img_size=args.size)
    transform = spec.transform()
    mean, std = torch.tensor(spec.mean).view(-1, 1, 1), torch.tensor(spec.std).view(-1, 1, 1)
    out = _out_dir(args)
    written, used = 0, set()
    for path, image in zip(paths, read_many_rgb([str(p) for p in paths])):
        if isinstance(image, BadImageError):
            print(f"skipped {path}: {image.reason}", file=sys.stderr)
            continue
        x = transform(image)
        maps = attention_maps(model, x[None].to(args.device))
        rollout, roll_prefix = maps.rollout(args.head_fusion, args.discard_ratio)
        heads, head_prefix = maps.last_layer_heads()
        prob, idx = maps.logits[0].float().softmax(-1).max(-1)
        label = spec.class_names[int(idx)] if spec.class_names else str(int(idx))
        name = f"attention_{path.stem}" if path.stem not in used else f"attention_{path.stem}_{written}"
        used.add(path.stem)  # two inputs with the same name in different folders get distinct files
        dst = out / f"{name}.png"
        plot_attention(
            x * std + mean, rollout[0], heads[0], dst,
            title=f"{path.name}: {label} ({100 * float(prob):.1f}%), {x.shape[-2]}x{x.shape[-1]} input",
            rollout_label=f"rollout ({args.head_fusion} over heads, discard {args.discard_ratio:g}), "
                          f"{maps.query_label}",
            head_label=f"last block, per head ({maps.query_label})", prefix_share=float(roll_prefix[0]),
            head_prefix_share=head_prefix[0].tolist() if maps.num_prefix_tokens > 1 else None, dpi=args.dpi)
        print(f"{path} -> {dst}")
        written += 1
    if not written:
        print("error: no image could be read", file=sys.stderr)
        return 2
    return 0


def cmd_posembed(args: argparse.Namespace) -> int:
    from ..viz.attention import set_resolution
    from ..viz.embeddings import plot_position_similarity, position_similarity
    from ..weights import load_model

    model = load_model(args.checkpoint)
    if args.size:
        with _unsupported_model_is_bad_input():
            set_resolution(model, args.size)
    similarity = position_similarity(model)
    h, w = similarity.shape[:2]
    dst = _out_dir(args) / "posembed.png"
    plot_position_similarity(similarity, dst, title=f"{Path(args.checkpoint).name}: position embedding similarity "
                             f"({h}x{w} patches)", dpi=args.dpi)
    print(f"-> {dst}")
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    from ..viz.embeddings import filter_components, plot_filter_components
    from ..weights import load_model

    components, share = filter_components(load_model(args.checkpoint), args.count)
    dst = _out_dir(args) / "filters.png"
    plot_filter_components(components, share, dst, title=f"{Path(args.checkpoint).name}: patch-embedding filters, "
                           f"first {len(share)} principal components ({100 * float(share.sum()):.0f}% of variance)",
                           dpi=args.dpi)
    print(f"-> {dst}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild report.html of an existing run: its validation split comes from the run's own config.yaml."""
    from ..train import build_datasets, load_config
    from ..viz.report import write_run_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} not found: is {run_dir} a vitkit run directory?")
    val = build_datasets(load_config(run_dir / "config.yaml"))[1]
    print(f"-> {write_run_report(run_dir, val, checkpoint=args.checkpoint, device=args.device)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..viz.attention import HEAD_FUSIONS

    viz = subparsers.add_parser("viz", help="pictures of a model (attention, position embeddings, filters), run reports")
    sub = viz.add_subparsers(dest="viz_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="a vitkit .safetensors checkpoint (or a registered model name: random weights)")
        p.add_argument("--out", default="viz", help="folder for the PNG files (default: ./viz)")
        p.add_argument("--dpi", type=int, default=100)

    p = sub.add_parser("attention", help="attention rollout over each image + the last block's per-head maps")
    common(p)
    p.add_argument("images", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--head-fusion", choices=HEAD_FUSIONS, default="mean", help="how the rollout combines heads")
    p.add_argument("--discard-ratio", type=float, default=0.0,
                   help="fraction of the weakest attention entries dropped per block before the rollout (e.g. 0.9)")
    p.add_argument("--size", type=parse_size, help="input size N or HxW (position embedding resampled); default: "
                   "the checkpoint's")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("posembed", help="cosine similarity of each patch's position embedding with all others")
    common(p)
    p.add_argument("--size", type=parse_size, help="draw the embedding resampled to this input size")
    p.set_defaults(func=cmd_posembed)

    p = sub.add_parser("filters", help="first principal components of the patch-embedding filters")
    common(p)
    p.add_argument("--count", type=int, default=28, help="number of components (the ViT paper shows 28)")
    p.set_defaults(func=cmd_filters)

    p = sub.add_parser("report", help="(re)write report.html of a training run directory")
    p.add_argument("run_dir", help="a run directory (holds config.yaml, best.safetensors, metrics.jsonl ...)")
    p.add_argument("--checkpoint", help="weights to report on (default: RUN_DIR/best.safetensors)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_report)

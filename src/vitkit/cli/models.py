"""`vitkit models | smoke`: the model registry, listed and proven to run."""

from __future__ import annotations

import argparse
import json
import sys
import time


def cmd_models(args: argparse.Namespace) -> int:
    from ..models.registry import list_models
    from ..plan.flops import model_summary

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

    from ..models.registry import create_model, get_model_spec, list_models

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
        if not torch.isfinite(out).all():  # a broken model, not bad input: exit status 1
            print(f"error: {name} produced non-finite outputs", file=sys.stderr)
            return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list registered models with params and GFLOPs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vit_*_patch16_224'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = subparsers.add_parser("smoke", help="forward every registered model once on a random image")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter of the model names")
    p.set_defaults(func=cmd_smoke)

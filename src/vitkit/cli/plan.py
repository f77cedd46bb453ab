"""`vitkit plan`: memory / FLOPs / time of a configuration; the work is in vitkit.plan's planner and compare."""

from __future__ import annotations

import argparse
import json

from .arguments import positive_int
from .choices import PLAN_OPTIMIZERS, PLAN_PRECISIONS, PLAN_STRATEGIES


def cmd_plan(args: argparse.Namespace) -> int:
    import torch

    from ..plan.compare import compare_with_measurement
    from ..plan.planner import PlanRequest, format_plan, plan, runs_fused_attention

    if not 0.0 <= args.token_dropout < 1.0:
        raise ValueError(f"--token-dropout must be in [0, 1), got {args.token_dropout}")
    if args.batch_size is not None:  # as data.batch_size in training: one forward pass, accumulated --accum times
        args.batch = args.batch_size * args.accum
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cpu = bool(args.gpu and args.gpu.lower().startswith("cpu")) or (args.measure and device.startswith("cpu"))
    fused = not args.explicit_attention and runs_fused_attention("cpu" if on_cpu else "cuda", args.precision)
    req = PlanRequest(
        model=args.model, img_size=args.img_size, batch=args.batch, mode=args.mode, precision=args.precision,
        optimizer=args.optimizer, grad_checkpointing=args.grad_checkpointing, accum=args.accum, devices=args.devices,
        strategy=args.strategy, token_keep_rate=1.0 - args.token_dropout, gpu=args.gpu,
        dataset_size=args.dataset_size, epochs=args.epochs, num_classes=args.num_classes, throughput=args.throughput,
        fused_attention=fused,
    )
    result = plan(req)
    comparison = compare_with_measurement(req, result, device, args.gpu) if args.measure else None
    if args.json:
        out = result.as_dict()
        if comparison is not None:
            out["measured"] = comparison.as_dict()
        print(json.dumps(out, indent=2))
        return 0
    print(format_plan(result))
    if comparison is not None:
        print("\n" + comparison.describe())
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="memory / FLOPs / time of a configuration on common accelerators")
    p.add_argument("model", help="registered model name, e.g. vit_base_patch16_224")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the model's)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("-b", "--batch-size", type=positive_int, default=None,
                       help="images per forward pass across all devices, as -b/--batch-size in vitkit train: an "
                            "optimizer step sees this x --accum (default: --batch)")
    batch.add_argument("--batch", type=int, default=32,
                       help="global batch per optimizer step (devices x accum x micro-batch)")
    p.add_argument("--mode", choices=("train", "infer"), default="train", help="what the memory is planned for")
    p.add_argument("--precision", choices=PLAN_PRECISIONS, default="bf16", help="number format of the step")
    p.add_argument("--optimizer", choices=PLAN_OPTIMIZERS, default="adamw", help="optimizer whose state is counted")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute block activations in backward")
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--devices", type=int, default=1, help="accelerators the batch is spread over")
    p.add_argument("--strategy", choices=PLAN_STRATEGIES, default="single", help="how several devices share the model")
    p.add_argument("--token-dropout", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of patch tokens dropped while training (0 = off)")
    p.add_argument("--gpu", default=None,
                   help="one accelerator (e.g. A100-80GB, 'rtx 4090', cpu:64, custom:mem_gb=24,tflops=71,bw_gbs=936); "
                        "default: the table")
    p.add_argument("--dataset-size", type=int, default=1_281_167, help="images per epoch (default ImageNet-1k)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of training, for the total time")
    p.add_argument("--num-classes", type=int, default=None, help="classifier width (default: the model's)")
    p.add_argument("--throughput", type=float, default=None,
                   help="known img/s, for the time columns (default: the fitted GPU time model)")
    p.add_argument("--explicit-attention", action="store_true",
                   help="plan for non-fused (N x N) attention (implied for bf16 on a CPU target or --measure on a "
                        "CPU: vitkit runs attention as two bf16 matmuls there)")
    p.add_argument("--measure", action="store_true",
                   help="also run the configuration here (one warm-up + one measured step) and print predicted vs measured")
    p.add_argument("--device", default=None, help="device for --measure (default: cuda if available, else cpu)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_plan)

"""Fine-tuning on a photo folder from a pretrained start: vitkit vs a timm train.py-style loop, side by side.

Both sides start from the same weights file and fine-tune the same architecture for the same epochs at the same
batch size, learning rate, schedule, label smoothing, gradient clipping, augmentation and precision (``--precision``:
fp32, or bf16 autocast, which timm's train.py gives with ``--amp --amp-dtype bfloat16``; ``auto``, the default, is
bf16 where the CPU computes bf16 natively, as vitkit's ``precision: auto`` decides):

(a) vitkit: ``vitkit.train.train`` with the photo defaults (the decoded uint8 cache at img_size / crop_pct, batched
    RandomResizedCrop + flip on the uint8 batch, per-epoch validation on the center crop); ``model.pretrained`` = the file.
(b) timm: ``timm.create_model`` (the file's weights through timm's own ``checkpoint_filter_fn``, which resamples
    the position embedding, head dropped), ``torchvision.datasets.ImageFolder`` + ``DataLoader`` (``--workers``
    worker processes) with ``timm.data.create_transform`` (RandomResizedCrop scale (scale_min, 1) + flip, no colour
    jitter; eval: resize img_size / crop_pct + center crop), ``timm.optim.create_optimizer_v2`` AdamW (no decay on
    norms and biases), ``timm.scheduler.CosineLRScheduler`` per step with linear warmup, timm's
    ``LabelSmoothingCrossEntropy``, clip grad norm, validation after every epoch: timm's train.py loop, inline.

Offline there are no ImageNet weights, so the pretrained start is a ViT that vitkit trains here first on CIFAR-10
(vit_tiny_patch16_224 with patch 8 at 32 px, ``--pretrain-seconds``), unless ``--pretrained FILE`` is given. The
fine-tune runs at ``--img-size`` (default 112: 14x14 tokens with patch 8, the token count of ViT-Ti/16 at 224), so
the position embedding is resampled 4x4 -> 14x14 on both sides.

images/s = training images / fine-tune wall time (for vitkit including its cache build and every validation, for
timm every validation); ``steady_images_per_second`` is the training loop alone. val top-1 = the last epoch's
validation accuracy on the val folder (153 photos).

    python benchmarks/finetune_photos.py [--data ../shared/data/hymenoptera] [--epochs 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import load

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

MODEL = "vit_tiny_patch16_224"


def pretrain_on_cifar(out_dir: Path, args: argparse.Namespace) -> Path:
    """A pretrained start made here: vitkit trains the benchmark's architecture on CIFAR-10 for a few minutes."""
    from vitkit.train import train
    from vitkit.train.config import load_config

    overrides = [
        f"model.name={MODEL}", f"model.kwargs={{patch_size: {args.patch_size}, depth: {args.depth}}}",
        f"data.name={args.pretrain_data}", f"data.img_size={args.pretrain_img_size}", "data.val_fraction=0",
        f"data.batch_size={args.batch_size * 2}", "optim.lr=0.001", "train.epochs=100",
        f"train.time_budget_s={args.pretrain_seconds}", "schedule.warmup_steps=50", "train.label_smoothing=0.1",
        f"checkpoint.out_dir={out_dir}", "log.progress=none", "log.tensorboard=false", "log.curves=false",
        "log.report=false"
    ]
    if args.pretrain_steps:
        overrides.append(f"train.max_steps={args.pretrain_steps}")
    summary = train(load_config(overrides=overrides))
    best = Path(summary["best_checkpoint"])
    if not best.is_file():
        raise SystemExit(f"pretraining wrote no weights under {summary['run_dir']}")
    return best


def shared_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"precision": args.precision, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": 0.05,
            "warmup_epochs": 1.0, "min_lr_ratio": 0.01, "label_smoothing": 0.1, "clip_grad_norm": 1.0,
            "img_size": args.img_size, "crop_pct": 0.875, "scale_min": args.scale_min, "flip": 0.5,
            "workers": args.workers, "seed": args.seed}


def run_vitkit(pretrained: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from vitkit.train import train
    from vitkit.train.config import load_config

    s = shared_settings(args)
    overrides = [
        f"model.name={MODEL}", f"model.kwargs={{patch_size: {args.patch_size}, depth: {args.depth}}}",
        f"model.pretrained={pretrained}", f"data.name={args.data}", f"data.img_size={s['img_size']}",
        f"data.crop_pct={s['crop_pct']}", f"data.scale_min={s['scale_min']}", f"data.batch_size={s['batch_size']}",
        f"data.num_workers={s['workers']}", f"data.cache_dir={work / 'cache'}", f"optim.lr={s['lr']}",
        f"optim.weight_decay={s['weight_decay']}", f"optim.clip_grad_norm={s['clip_grad_norm']}",
        f"schedule.warmup_epochs={s['warmup_epochs']}", f"schedule.min_lr_ratio={s['min_lr_ratio']}",
        f"train.epochs={s['epochs']}", f"train.label_smoothing={s['label_smoothing']}", f"train.seed={s['seed']}",
        f"train.precision={s['precision']}",
        f"checkpoint.out_dir={work / 'vitkit_runs'}", "log.progress=none", "log.tensorboard=false",
        "log.curves=false", "log.report=false",
    ]
    t0 = time.perf_counter()
    summary = train(load_config(overrides=overrides))
    wall = time.perf_counter() - t0
    history = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in history if r.get("kind") == "epoch" and "val_acc1" in r]
    from vitkit.weights import read_checkpoint_metadata

    meta = read_checkpoint_metadata(summary["best_checkpoint"])
    extra = meta.get("extra", meta)
    return {"wall_seconds": round(wall, 2), "train_images": summary["train_images"],
            "images_per_second": round(summary["train_images"] / wall, 1),
            "steady_images_per_second": round(summary["train_img_per_s"] or 0.0, 1),
            "val_top1_last_epoch": val[-1]["val_acc1"] if val else None,
            "val_top1_best": summary.get("best_val_acc1"), "val_top1_per_epoch": [r["val_acc1"] for r in val],
            "mean": extra.get("mean"), "std": extra.get("std"), "run_dir": summary["run_dir"]}


def run_timm(pretrained: Path, args: argparse.Namespace, mean, std) -> dict[str, Any]:
    import timm
    import torchvision
    from safetensors.torch import load_file
    from timm.data import create_transform
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.models.vision_transformer import checkpoint_filter_fn
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    s = shared_settings(args)
    torch.manual_seed(s["seed"])
    t0 = time.perf_counter()
    model = timm.create_model(MODEL, pretrained=False, num_classes=2, img_size=s["img_size"],
                              patch_size=args.patch_size, depth=args.depth)
    state = checkpoint_filter_fn(load_file(str(pretrained)), model)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert sorted(missing) == ["head.bias", "head.weight"] and not unexpected, (missing, unexpected)

    train_tf = create_transform(s["img_size"], is_training=True, scale=(s["scale_min"], 1.0), hflip=s["flip"],
                                color_jitter=None, interpolation="bilinear", mean=mean, std=std)
    eval_tf = create_transform(s["img_size"], is_training=False, crop_pct=s["crop_pct"], interpolation="bilinear",
                               mean=mean, std=std)
    train_ds = torchvision.datasets.ImageFolder(str(Path(args.data) / "train"), transform=train_tf)
    val_ds = torchvision.datasets.ImageFolder(str(Path(args.data) / "val"), transform=eval_tf)
    loader_kw = {"num_workers": s["workers"], "persistent_workers": s["workers"] > 0}
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=s["batch_size"], shuffle=True, drop_last=True,
                                               generator=torch.Generator().manual_seed(s["seed"]), **loader_kw)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=s["batch_size"], **loader_kw)
    optimizer = create_optimizer_v2(model, "adamw", lr=s["lr"], weight_decay=s["weight_decay"])
    steps_per_epoch = len(train_loader)
    scheduler = CosineLRScheduler(optimizer, t_initial=s["epochs"] * steps_per_epoch, lr_min=s["lr"] * s["min_lr_ratio"],
                                  warmup_t=int(s["warmup_epochs"] * steps_per_epoch), warmup_lr_init=0.0,
                                  warmup_prefix=True, t_in_epochs=False)
    loss_fn = LabelSmoothingCrossEntropy(s["label_smoothing"])

    def amp_autocast():  # timm train.py's --amp --amp-dtype bfloat16 on a CPU: torch.autocast around forward + loss
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=s["precision"] == "bf16")

    images = step = 0
    loop_seconds = 0.0
    per_epoch = []
    for _ in range(s["epochs"]):
        model.train()
        t_epoch = time.perf_counter()
        for x, y in train_loader:
            with amp_autocast():
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip_grad_norm"])
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            images += x.shape[0]
        loop_seconds += time.perf_counter() - t_epoch
        model.eval()
        correct = total = 0
        with torch.inference_mode(), amp_autocast():
            for x, y in val_loader:
                correct += int((model(x).argmax(-1) == y).sum())
                total += y.numel()
        per_epoch.append(100.0 * correct / total)
    wall = time.perf_counter() - t0
    return {"wall_seconds": round(wall, 2), "train_images": images, "images_per_second": round(images / wall, 1),
            "steady_images_per_second": round(images / loop_seconds, 1), "val_top1_last_epoch": per_epoch[-1],
            "val_top1_best": max(per_epoch), "val_top1_per_epoch": per_epoch, "timm": timm.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("VITKIT_HYMENOPTERA_DIR",
                                                         str(REPO.parent / "shared" / "data" / "hymenoptera")))
    parser.add_argument("--pretrained", default=None, help="weights file to start from (default: pretrain here)")
    parser.add_argument("--pretrain-data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    parser.add_argument("--pretrain-img-size", type=int, default=32)
    parser.add_argument("--pretrain-seconds", type=float, default=300.0)
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("-b", "--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--scale-min", type=float, default=0.08)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="both sides (default: bf16 where the CPU has native bf16, else fp32)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: synthetic pretraining for 2 steps, depth 2, 32 px, 1 epoch (figures meaningless)")
    parser.add_argument("--out", default=None, help="JSON result (default: benchmarks/results/finetune_photos.json; "
                                                    "--quick: not written unless given)")
    args = parser.parse_args(argv)
    from vitkit.runtime import resolve_precision

    args.precision = resolve_precision(args.precision, torch.device("cpu"))
    if args.quick:
        args.pretrain_data, args.pretrain_steps, args.pretrain_seconds = "synthetic", 2, 60.0
        args.depth, args.img_size, args.epochs, args.batch_size, args.workers = 2, 32, 1, 16, 0
    if not (Path(args.data) / "train").is_dir() or not (Path(args.data) / "val").is_dir():
        print(f"error: no train/ + val/ photo folder at {args.data} (set --data)", file=sys.stderr)
        return 2
    if args.pretrained is not None and not Path(args.pretrained).is_file():
        print(f"error: --pretrained {args.pretrained}: no such file", file=sys.stderr)
        return 2
    from vitkit.runtime import machine_info

    work = Path(tempfile.mkdtemp(prefix="finetune-photos-"))
    result: dict[str, Any] = {
        "benchmark": "finetune_photos", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine_info": machine_info(),
        "torch": torch.__version__, "python": platform.python_version(), "data": str(Path(args.data).resolve()),
        "model": {"name": MODEL, "patch_size": args.patch_size, "depth": args.depth}, "quick": args.quick,
        "settings": shared_settings(args), "load_before": load(),
    }
    try:
        t0 = time.perf_counter()
        if args.pretrained:
            pretrained = Path(args.pretrained)
            result["pretrained"] = {"file": str(pretrained.resolve()), "made_here": False}
        else:
            pretrained = pretrain_on_cifar(work / "pretrain", args)
            result["pretrained"] = {
                "file": "made by this run (temporary)", "made_here": True, "data": args.pretrain_data,
                "img_size": args.pretrain_img_size, "seconds": round(time.perf_counter() - t0, 1),
                "note": "no ImageNet weights offline: a ViT that vitkit trained on CIFAR-10 here is the pretrained "
                        "start of both sides (the same file)"}
        print(f"pretrained start: {pretrained}", flush=True)
        result["vitkit"] = run_vitkit(pretrained, args, work)
        result["load_after_vitkit"] = load()
        print(f"vitkit: {result['vitkit']['images_per_second']} img/s, val top-1 "
              f"{result['vitkit']['val_top1_last_epoch']}", flush=True)
        result["timm"] = run_timm(pretrained, args, result["vitkit"]["mean"], result["vitkit"]["std"])
        result["load_after"] = load()
        print(f"timm:   {result['timm']['images_per_second']} img/s, val top-1 "
              f"{result['timm']['val_top1_last_epoch']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["speedup"] = round(result["vitkit"]["images_per_second"] / result["timm"]["images_per_second"], 2)
    result["goal"] = "vitkit >= 1.3x timm's images/s at equal or better val top-1"
    result["goal_met"] = bool(result["speedup"] >= 1.3 and
                              result["vitkit"]["val_top1_last_epoch"] >= result["timm"]["val_top1_last_epoch"])
    high = max(result["load_before"][0], result["load_after"][0]) > (os.cpu_count() or 1)
    result["load_note"] = ("load average above the core count: other processes shared the CPU, figures are lower "
                           "bounds" if high else "load average at or below the core count")
    print(f"speedup {result['speedup']}x  goal met: {result['goal_met']}  load {result['load_before']} -> "
          f"{result['load_after']}")
    out = args.out or (None if args.quick else str(REPO / "benchmarks" / "results" / "finetune_photos.json"))
    if out:
        from vitkit.utils.fileio import atomic_write_text

        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

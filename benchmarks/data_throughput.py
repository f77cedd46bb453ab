"""Images/s delivered to the training loop on CIFAR-10 JPEGs: torchvision ImageFolder + DataLoader vs vitkit.

(a) baseline: torchvision.datasets.ImageFolder + DataLoader, per-sample v2 RandomCrop(32, padding=4) +
    RandomHorizontalFlip + ToDtype + Normalize, ``--workers`` worker processes.
(b) vitkit: the decoded uint8 memmap cache + the tensor loader (``--workers`` prefetch threads) + BatchAugment doing
    the same crop/pad/flip/normalise on the whole batch. Also recorded: the same with no prefetch thread, and the
    cache feeding the per-sample v2 transform in ``--workers`` DataLoader workers (the decode saving alone).
Both are timed over one full training epoch (50,000 images, batch 256, drop_last), in the same process run. The cache
build (all 60,000 JPEGs, train + test, ``--workers`` decode processes) is timed from a cold (empty) cache folder.

    python benchmarks/data_throughput.py [--root ../shared/data/cifar10] [--workers 2] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import torchvision
from _common import load
from torchvision.transforms import v2

from vitkit.data import BatchAugment, build_dataset, build_loader
from vitkit.runtime import machine_info
from vitkit.utils.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def time_epoch(batches, consume) -> dict:
    """Images/s over one epoch; ``steady`` excludes the first batch (worker start-up, first reads)."""
    t0 = time.perf_counter()
    t_first = None
    images = first_images = 0
    for batch in batches:
        n = consume(batch)
        images += n
        if t_first is None:
            t_first, first_images = time.perf_counter(), n
    total = time.perf_counter() - t0
    steady = time.perf_counter() - t_first
    return {"images": images, "epoch_seconds": round(total, 3), "images_per_second": round(images / total, 1),
            "steady_images_per_second": round((images - first_images) / steady, 1)}


def per_sample_transform(mean, std) -> v2.Compose:
    return v2.Compose([
        v2.ToImage(), v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
    ])


def check_batch(x: torch.Tensor) -> int:
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
    return int(x.shape[0])


def baseline(root: Path, workers: int, batch_size: int, mean, std) -> dict:
    ds = torchvision.datasets.ImageFolder(str(root / "train"), transform=per_sample_transform(mean, std))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))

    return time_epoch(loader, lambda batch: check_batch(batch[0]))


def vitkit_path(ds, workers: int, batch_size: int) -> dict:
    loader = build_loader(ds, batch_size, train=True, seed=0, num_workers=workers)
    aug = BatchAugment(ds.num_classes, ds.mean, ds.std, crop_padding=4, flip=True)

    return time_epoch(loader, lambda batch: check_batch(aug(*batch)[0]))


def vitkit_per_sample(ds, workers: int, batch_size: int) -> dict:
    """The cache with the same per-sample v2 transform in DataLoader workers: what skipping the decode alone buys."""
    loader = build_loader(ds, batch_size, train=True, seed=0, num_workers=workers,
                          transform=per_sample_transform(ds.mean, ds.std))
    return time_epoch(loader, lambda batch: check_batch(batch[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = os.environ.get("VITKIT_CIFAR10_DIR", str(REPO.parent / "shared" / "data" / "cifar10"))
    parser.add_argument("--root", default=default_root)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads of the main process (BatchAugment); workers use 1 each, as in DataLoader")
    parser.add_argument("--cache-dir", default=str(REPO / ".cache" / "vitkit" / "benchmark"),
                        help="emptied first, so the build is timed from cold")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_throughput.json"))
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "train").is_dir():
        print(f"error: no CIFAR-10 ImageFolder at {root} (set --root or VITKIT_CIFAR10_DIR)", file=sys.stderr)
        return 2
    result: dict = {
        "benchmark": "data_throughput", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "root": str(root.resolve()), "workers": args.workers, "batch_size": args.batch_size,
        "machine": machine_info(), "torch_threads_main": args.torch_threads,
        "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_before": load(),
    }
    torch.set_num_threads(args.torch_threads)

    shutil.rmtree(args.cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    train = build_dataset(root, "train", cache_dir=args.cache_dir, num_workers=args.workers)
    t_train = time.perf_counter() - t0
    test = build_dataset(root, "test", cache_dir=args.cache_dir, num_workers=args.workers)
    total = time.perf_counter() - t0
    n_built = len(train) + len(test)
    result["cache_build"] = {
        "images": n_built, "seconds": round(total, 2), "images_per_second": round(n_built / total, 1),
        "train_seconds": round(t_train, 2), "test_seconds": round(total - t_train, 2), "decode_workers": args.workers,
        "goal_seconds": 60, "note": "wall time of build_dataset for train + test: scan, stat, decode, write, stats",
    }
    result["loadavg_after_build"] = load()
    print(f"cache build: {n_built} JPEGs in {total:.1f} s = {n_built / total:.0f} img/s "
          f"(train {t_train:.1f} s, test {total - t_train:.1f} s)", flush=True)

    reopened = time.perf_counter()
    train = build_dataset(root, "train", cache_dir=args.cache_dir)
    result["cache_reopen_seconds"] = round(time.perf_counter() - reopened, 2)
    assert train.meta["cache"]["hit"]

    result["baseline"] = baseline(root, args.workers, args.batch_size, train.mean, train.std)
    result["loadavg_after_baseline"] = load()
    print(f"torchvision ImageFolder+DataLoader: {result['baseline']['images_per_second']:.0f} img/s", flush=True)
    result["vitkit"] = vitkit_path(train, args.workers, args.batch_size)
    result["vitkit_no_threads"] = vitkit_path(train, 0, args.batch_size)
    result["vitkit_per_sample_workers"] = vitkit_per_sample(train, args.workers, args.batch_size)
    result["loadavg_after"] = load()
    result["speedup"] = round(result["vitkit"]["images_per_second"] / result["baseline"]["images_per_second"], 2)
    print(f"vitkit cached + BatchAugment:       {result['vitkit']['images_per_second']:.0f} img/s "
          f"({result['vitkit_no_threads']['images_per_second']:.0f} without prefetch threads; "
          f"{result['vitkit_per_sample_workers']['images_per_second']:.0f} cached + per-sample v2 in workers)")
    print(f"speedup: {result['speedup']}x   load average before {result['loadavg_before']} "
          f"after {result['loadavg_after']}")
    high = max(result["loadavg_before"][0], result["loadavg_after"][0]) > (os.cpu_count() or 1)
    result["load_note"] = ("load average above the core count: other processes shared the CPU, figures are lower "
                           "bounds" if high else "load average at or below the core count")
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

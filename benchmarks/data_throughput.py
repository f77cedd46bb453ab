"""Images/s delivered to the training loop: torchvision ImageFolder + DataLoader vs vitkit, on CIFAR-10 and photos.

(a) baseline: torchvision.datasets.ImageFolder + DataLoader, per-sample v2 RandomCrop(32, padding=4) +
    RandomHorizontalFlip + ToDtype + Normalize, ``--workers`` worker processes.
(b) vitkit: the decoded uint8 memmap cache + the tensor loader (``--workers`` prefetch threads) + BatchAugment doing
    the same crop/pad/flip/normalise on the whole batch. Also recorded: the same with no prefetch thread, and the
    cache feeding the per-sample v2 transform in ``--workers`` DataLoader workers (the decode saving alone).
Both are timed over one full training epoch (50,000 images, batch 256, drop_last), in the same process run. The cache
build (all 60,000 JPEGs, train + test, ``--workers`` decode processes) is timed from a cold (empty) cache folder.

The photo case (``--case photo``, in ``"photo"`` of the JSON) is the fine-tuning road: the hymenoptera train folder
(244 real photos from 193x130 to 2592x1944 px) read ``--photo-repeat`` times over (the file list repeated, so both
paths deliver the same few thousand images), at ``--photo-size`` (224) px with RandomResizedCrop (scale 0.08..1,
aspect 3/4..4/3) + flip + normalise. Baseline: ImageFolder (PIL decode of every file, every time) + per-sample v2
transforms in ``--workers`` DataLoader workers. vitkit: the cache stored at 224 / 0.875 = 256 px short side (its
build timed apart: it happens once per folder and size) + the tensor loader with channels-last batches (as the
training loop asks for photos) + BatchAugment(crop="resized"), each crop one uint8 antialiased resize.
``--torch-threads 2`` gives vitkit's one process the two cores that the baseline's two workers have.

    python benchmarks/data_throughput.py [--case cifar|photo|all] [--root ../shared/data/cifar10]
        [--photo-root ../shared/data/hymenoptera] [--workers 2] [--batch-size 256] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
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


def time_epoch(batches, consume, max_batches: int | None = None) -> dict:
    """Images/s over one epoch; ``steady`` excludes the first batch (worker start-up, first reads)."""
    t0 = time.perf_counter()
    t_first = None
    images = first_images = 0
    for batch in itertools.islice(batches, max_batches):
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


def cifar_case(root: Path, args: argparse.Namespace, result: dict) -> None:
    """The CIFAR-10 JPEG case: the cold cache build, then one training epoch through each path."""
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
    result["speedup"] = round(result["vitkit"]["images_per_second"] / result["baseline"]["images_per_second"], 2)
    print(f"vitkit cached + BatchAugment:       {result['vitkit']['images_per_second']:.0f} img/s "
          f"({result['vitkit_no_threads']['images_per_second']:.0f} without prefetch threads; "
          f"{result['vitkit_per_sample_workers']['images_per_second']:.0f} cached + per-sample v2 in workers)")
    print(f"speedup: {result['speedup']}x", flush=True)


def photo_transform(size: int, mean, std) -> v2.Compose:
    return v2.Compose([
        v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
    ])


def photo_case(root: Path, args: argparse.Namespace) -> dict:
    """The same ``repeat`` passes over the photo folder, torchvision per-sample vs vitkit cached + batched."""
    size, repeat, batch_size, workers = args.photo_size, args.photo_repeat, args.photo_batch_size, args.workers
    max_batches = 2 if args.quick else None
    cache_dir = Path(args.cache_dir) / "photo"
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    train = build_dataset(root, "train", img_size=size, cache_dir=cache_dir, num_workers=workers)
    build_seconds = time.perf_counter() - t0
    out: dict = {
        "root": str(root.resolve()), "files": len(train), "repeat": repeat, "img_size": size,
        "batch_size": batch_size, "workers": workers, "stored_size": list(train.images.shape[1:3]),
        "cache_build": {"images": len(train), "seconds": round(build_seconds, 2),
                        "images_per_second": round(len(train) / build_seconds, 1),
                        "note": "once per folder and size, not counted in vitkit's images/s below"},
    }

    def check(x: torch.Tensor) -> int:
        assert x.shape[1:] == (3, size, size) and x.dtype == torch.float32, x.shape
        return int(x.shape[0])

    folder = torchvision.datasets.ImageFolder(str(root / "train"), transform=photo_transform(size, train.mean,
                                                                                             train.std))
    folder.samples = folder.samples * repeat
    folder.imgs, folder.targets = folder.samples, [t for _, t in folder.samples]
    loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, generator=torch.Generator().manual_seed(0))
    out["baseline"] = time_epoch(loader, lambda batch: check(batch[0]), max_batches)
    out["loadavg_after_baseline"] = load()
    print(f"photos, torchvision ImageFolder+DataLoader: {out['baseline']['images_per_second']:.0f} img/s", flush=True)

    vitkit_loader = build_loader(train, batch_size, train=True, seed=0, num_workers=workers, channels_last=True)
    aug = BatchAugment(train.num_classes, train.mean, train.std, crop="resized", out_size=size, flip=True,
                       generator=torch.Generator().manual_seed(0))

    def passes():
        for epoch in range(repeat):
            vitkit_loader.set_epoch(epoch)
            yield from vitkit_loader

    out["vitkit"] = time_epoch(passes(), lambda batch: check(aug(*batch)[0]), max_batches)
    out["speedup"] = round(out["vitkit"]["images_per_second"] / out["baseline"]["images_per_second"], 2)
    out["goal"] = ">= 5x"
    print(f"photos, vitkit cached + BatchAugment(resized): {out['vitkit']['images_per_second']:.0f} img/s "
          f"(speedup {out['speedup']}x; cache build {build_seconds:.1f} s)", flush=True)
    return out


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
    parser.add_argument("--case", choices=["cifar", "photo", "all"], default="all")
    parser.add_argument("--photo-root", default=os.environ.get("VITKIT_HYMENOPTERA_DIR",
                                                               str(REPO.parent / "shared" / "data" / "hymenoptera")))
    parser.add_argument("--photo-size", type=int, default=224)
    parser.add_argument("--photo-repeat", type=int, default=12, help="passes over the photo folder (244 files)")
    parser.add_argument("--photo-batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the photo case only, 2 batches of 8 at 64 px (figures meaningless)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/data_throughput.json "
                                                    "(--case photo: data_throughput_photo.json; --quick: none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.case, args.photo_size, args.photo_repeat, args.photo_batch_size = "photo", 64, 1, 8
    results = REPO / "benchmarks" / "results"
    out_path = args.out or (None if args.quick else str(results / ("data_throughput_photo.json"
                                                                   if args.case == "photo" else "data_throughput.json")))
    root, photo_root = Path(args.root), Path(args.photo_root)
    if args.case != "cifar" and not (photo_root / "train").is_dir():
        print(f"error: no photo folder with train/ at {photo_root} (set --photo-root or VITKIT_HYMENOPTERA_DIR)",
              file=sys.stderr)
        return 2
    if args.case != "photo" and not (root / "train").is_dir():
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
    if args.case != "photo":
        cifar_case(root, args, result)
    if args.case != "cifar":
        result["photo"] = photo_case(photo_root, args)
    result["loadavg_after"] = load()
    print(f"load average before {result['loadavg_before']} after {result['loadavg_after']}")
    high = max(result["loadavg_before"][0], result["loadavg_after"][0]) > (os.cpu_count() or 1)
    result["load_note"] = ("load average above the core count: other processes shared the CPU, figures are lower "
                           "bounds" if high else "load average at or below the core count")
    if out_path:
        atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
        print(f"saved {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`vitkit cache`: decode a dataset once into the uint8 memory-mapped cache, ahead of training."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .arguments import non_negative_int, positive_int, writable_folder
from .choices import ENV_CACHE_DIR


def cmd_cache(args: argparse.Namespace) -> int:
    """Build (or verify) the cache entry of each split; one line per split with its decode rate."""
    from ..data import build_dataset

    if args.cache_dir is not None:
        writable_folder(args.cache_dir, "--cache-dir")
    kind_kwargs: dict[str, Any] = {}
    if args.dataset in ("cifar10", "cifar100"):
        kind_kwargs.update(root=args.root, download=args.download)
    for split in args.splits:
        t0 = time.perf_counter()
        ds = build_dataset(args.dataset, split, cache_dir=args.cache_dir, storage_size=args.storage_size,
                           bad_files=args.bad_files, num_workers=args.workers, **kind_kwargs)
        info = ds.meta.get("cache", {})
        state = "reused" if info.get("hit") else f"built at {info.get('images_per_second', 0):.0f} img/s"
        print(f"{split:5s} {len(ds):8d} images {ds.image_size[0]}x{ds.image_size[1]}  {state}  "
              f"({time.perf_counter() - t0:.1f} s)  {info.get('directory', '')}", flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cache", help="decode a dataset once into the uint8 memory-mapped cache (with img/s)")
    p.add_argument("dataset", help="ImageFolder root, 'imagefolder:<root>', 'cifar10' or 'cifar100'")
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val", "test"],
                   help="splits to decode")
    p.add_argument("--storage-size", type=positive_int, default=None, help="short side stored in the cache (default: as is)")
    p.add_argument("--cache-dir", default=None, help=f"default ${ENV_CACHE_DIR} or ./.cache/vitkit")
    p.add_argument("--workers", type=non_negative_int, default=None, help="decode processes (default: CPUs, at most 8)")
    p.add_argument("--bad-files", choices=["skip", "error"], default="skip",
                   help="an unreadable image: skip it (and list it) or stop")
    p.add_argument("--root", default=None, help="cifar10/cifar100: folder holding the python batches (default: "
                                                "<cache dir>/downloads)")
    p.add_argument("--download", action="store_true", help="cifar10/cifar100: download if missing (md5 checked)")
    p.set_defaults(func=cmd_cache)

"""Image folders through the decoded cache: formats, bad files, bombs, layouts and their errors, the stored size
(it follows the training resolution, never one file), a real CIFAR-10 copy and real photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.data import build_cached, jpeg_bytes, make_image_folder, real_cifar10_root, solid
from vitkit.data import build_loader
from vitkit.data.decode import BadImageError
from vitkit.data.imagefolder import (
    DatasetLayoutError,
    class_folders,
    folder_layout,
    photo_storage_side,
    plan_storage,
    scan_split,
    split_folder,
)

HYMENOPTERA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hymenoptera"


def test_every_format_decodes_to_rgb_and_bad_files_are_skipped_and_reported(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root)
    with pytest.warns(UserWarning, match=r"2 of 9 images .* were skipped; the list is in .*skipped.tsv") as rec:
        ds = build_cached(root)
    assert ds.classes == ["cat", "dog"]
    assert isinstance(ds.images, np.memmap) and ds.images.shape == (7, 12, 12, 3)
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert ds.meta["skipped"] == 2
    report = ds.meta["skipped_report"]
    lines = open(report).read().splitlines()
    assert sorted(os.path.basename(line.split("\t")[0]) for line in lines) == ["corrupt.jpg", "truncated.jpg"]
    assert all(line.split("\t")[1] for line in lines)  # a reason for each
    assert "skipped.tsv" in str(rec[0].message)
    # cat: a.jpg (red JPEG), b.jpeg, c.png (green), d.webp (blue); dog: e.bmp, gray.png, palette.png
    np.testing.assert_allclose(ds.images[0].reshape(-1, 3).mean(0), (200, 30, 30), atol=4)
    assert (ds.images[2] == (10, 200, 10)).all() and (ds.images[3] == (30, 30, 220)).all()
    assert (ds.images[4] == (90, 90, 10)).all()
    assert (ds.images[5] == 77).all()  # grayscale -> RGB with equal channels
    assert (ds.images[6] == (250, 120, 5)).all()  # palette index 1 -> its colour
    image, label = ds[6]
    assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and label == 1


def test_policy_error_raises_with_the_path(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root)
    with pytest.raises(BadImageError, match=r"(corrupt|truncated)\.jpg"):
        build_cached(root, bad_files="error")
    assert not list((tmp_path / "cache").glob("*/meta.json"))  # nothing half-built is left usable
    with pytest.warns(UserWarning, match="skipped"):
        build_cached(root)  # an entry built under 'skip' ...
    with pytest.raises(BadImageError, match=r"corrupt\.jpg"):
        build_cached(root, bad_files="error")  # ... does not hide its bad files from a later 'error' run


def test_mixed_sizes_are_fitted_to_the_storage_size(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    wide = np.zeros((12, 24, 3), np.uint8)
    wide[:, 6:18] = 200  # the centre square survives the center crop
    Image.fromarray(wide).save(root / "train" / "cat" / "wide.png")
    ds = build_cached(root)  # CIFAR-sized (typical short side 12): stored at that size
    assert ds.images.shape == (8, 12, 12, 3)
    assert (ds.images[4] == 200).all()  # cat files sorted: a, b, c, d, wide


def test_a_phone_photo_with_an_exif_rotation_is_cached_upright(tmp_path):
    """Stored 24 wide x 12 tall with its left half red and EXIF orientation 6 (shown rotated 90 degrees clockwise):
    the cache holds it as shown, 12 wide x 24 tall with the red half on top, center-cropped to the 12 px storage."""
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    pixels = np.zeros((12, 24, 3), np.uint8)
    pixels[:, :12] = (250, 0, 0)
    pixels[:, 12:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(root / "train" / "cat" / "phone.png", exif=exif.tobytes())
    ds = build_cached(root)
    stored = ds.images[4].astype(int)  # cat files sorted: a, b, c, d, phone
    assert ds.images.shape == (8, 12, 12, 3)
    assert (stored[:5, :, 0] > 200).all() and (stored[7:, :, 2] > 200).all()  # red above blue: upright


def test_decompression_bombs_are_refused(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    (root / "train" / "cat" / "big.jpg").write_bytes(jpeg_bytes(solid((1, 1, 1), (40, 40))))
    solid((1, 1, 1), (40, 40)).save(root / "train" / "dog" / "big.png")
    with pytest.warns(UserWarning, match="2 of 9"):
        ds = build_cached(root, max_pixels=1000, storage_size=12)
    reasons = open(ds.meta["skipped_report"]).read()
    assert reasons.count("decompression bomb") == 2 and "40x40 = 1600 pixels" in reasons
    with pytest.raises(BadImageError, match="big"):
        build_cached(root, max_pixels=1000, storage_size=12, bad_files="error", cache_dir=tmp_path / "other")


def test_layout_errors_name_the_path_and_expectation(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        build_cached(tmp_path / "missing")
    flat = tmp_path / "flat"
    (flat / "cat").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"class folder .*cat has no images"):
        build_cached(flat)  # a plain class folder, with an empty class
    no_train = tmp_path / "no_train"
    make_image_folder(no_train, bad=False)
    (no_train / "train").rename(no_train / "test")
    with pytest.raises(DatasetLayoutError, match=r"has val/, test/ but no train/ folder"):
        build_cached(no_train)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(DatasetLayoutError, match=r"expected one subfolder per class"):
        build_cached(nothing)
    loose = tmp_path / "loose"
    (loose / "train").mkdir(parents=True)
    solid((1, 1, 1)).save(loose / "train" / "x.png")
    with pytest.raises(DatasetLayoutError, match="one subfolder per class.*put them in class folders"):
        build_cached(loose)
    empty = tmp_path / "empty"
    make_image_folder(empty, bad=False, val=False)
    (empty / "train" / "zebra").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"zebra has no images"):
        build_cached(empty)
    differ = tmp_path / "differ"
    make_image_folder(differ, bad=False)
    (differ / "val" / "dog").rename(differ / "val" / "wolf")
    with pytest.raises(DatasetLayoutError, match=r"missing \['dog'\], unexpected \['wolf'\]"):
        build_cached(differ, "val")


def test_val_split_uses_train_statistics_and_test_stands_in_only_saying_so(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    train = build_cached(root)
    val = build_cached(root, "val")
    assert len(val) == 2 and val.mean == train.mean and val.std == train.std
    (root / "val").rename(root / "test")
    with pytest.warns(UserWarning, match="validation and test are the same images"):
        test_as_val = build_cached(root, "val")  # val_fraction=0 and no val/: nothing else to validate on
    assert test_as_val.meta["split_source"].startswith("data/test (no val/ folder and val_fraction=0")
    assert len(test_as_val) == 2


def test_val_fraction_on_a_cached_dataset_stays_memory_mapped(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, bad=False, val=False)
    full = build_cached(root)
    tr = build_cached(root, "train", val_fraction=0.3, seed=0)
    va = build_cached(root, "val", val_fraction=0.3, seed=0)
    assert isinstance(tr.images, np.memmap) and isinstance(va.images, np.memmap)
    assert len(tr) + len(va) == len(full) and set(va.labels.tolist()) == {0, 1}
    rows = {r.tobytes() for r in np.asarray(full.images)}
    assert all(r.tobytes() in rows for r in np.asarray(va.images))
    loader = build_loader(tr, 2, train=True)
    x, y = next(iter(loader))
    assert x.shape == (2, 3, 12, 12) and y.dtype == torch.int64


@pytest.mark.skipif(real_cifar10_root() is None, reason="shared CIFAR-10 JPEG copy not present")
def test_real_cifar10_folder_layout_and_a_slice_of_its_jpegs(tmp_path):
    real = real_cifar10_root()
    train_dir = split_folder(real, "train")
    classes = class_folders(train_dir)
    assert sorted(folder_layout(real).folders) == ["test", "train"]
    assert len(classes) == 10 and classes == sorted(classes)
    files, labels = scan_split(train_dir, classes)
    assert len(files) == 50000 and np.bincount(labels).tolist() == [5000] * 10
    # decode a few real JPEGs per class through the cache (symlinked, so the test stays fast)
    for split in ("train", "test"):
        for c in classes:
            (tmp_path / "mini" / split / c).mkdir(parents=True)
            for f in sorted((real / split / c).iterdir())[:3]:
                (tmp_path / "mini" / split / c / f.name).symlink_to(f)
    ds = build_cached(tmp_path / "mini", "test")
    assert ds.images.shape == (30, 32, 32, 3) and ds.classes == classes  # CIFAR-sized: stored as is
    assert ds.meta["augment"] == "small" and ds.meta["test_split"] == "mini/test"
    ref = np.asarray(Image.open(sorted((real / "test" / classes[0]).iterdir())[0]).convert("RGB"))
    assert np.abs(ds.images[0].astype(int) - ref.astype(int)).max() <= 2  # libjpeg-turbo vs PIL rounding


def _photo_folder(root: Path, *, per_class: int = 4, tiny_first: bool = False, size=(96, 72)) -> None:
    """``root/<class>/*.png``: a plain class folder of 96x72 'photos' (short side 72 > the CIFAR-sized limit of 64),
    each a left-to-right gradient with a class colour, so crops and flips are visible; optionally a 4x4 image that
    sorts first in its class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ants", "bees")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            w, h = size
            image = np.zeros((h, w, 3), np.uint8)
            image[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
            image[..., 1] = 60 + 120 * c
            image[..., 2] = rng.integers(0, 255)
            Image.fromarray(image).save(folder / f"img{i}.png")
        if tiny_first:
            solid((250, 0, 0), (4, 4)).save(folder / "aaa_tiny.png")


def test_stored_size_follows_the_training_resolution_not_the_first_file(tmp_path):
    root = tmp_path / "photos"
    _photo_folder(root, tiny_first=True)
    train = build_cached(root, "train", img_size=32, crop_pct=0.875)
    side = photo_storage_side(32, 0.875)
    assert side == 36  # 32 / 0.875 = 36.57, rounded down as timm rounds the eval resize
    assert train.images.shape == (10, side, side, 3) and train.meta["storage_size"] == [side, side]
    assert train.meta["augment"] == "photo" and train.meta["train_size"] == [32, 32]
    assert train.meta["cache"]["upsampled"] == 2  # the two 4x4 files, enlarged; the 72 px sources shrink
    assert train.meta["source_short_side"] == 72
    again = build_cached(root, "train", img_size=32, crop_pct=0.875)
    assert again.meta["cache"]["hit"] and again.meta["cache"]["upsampled"] == 2  # the count survives in meta.json
    assert build_cached(root, "train", img_size=32, storage_size=48).image_size == (48, 48)  # the user's size
    # without img_size, photos train at 224 and are stored at 224 / 0.875 = 256
    assert build_cached(root, "train", val_fraction=0.25).image_size == (256, 256)


def test_plan_storage_decides_by_the_typical_size(tmp_path):
    root = tmp_path / "photos"
    _photo_folder(root)
    files, _ = scan_split(root, ["ants", "bees"])
    assert plan_storage(files).augment == "photo"
    assert plan_storage(files, img_size=64, crop_pct=1.0).storage == (64, 64)
    small = plan_storage(files, augment="small")  # forced: stored at the typical size, trained at it
    assert small.storage == small.train_size == (72, 72)
    cifar = tmp_path / "cifar"
    make_image_folder(cifar, bad=False, val=False)
    files, _ = scan_split(cifar / "train", ["cat", "dog"])
    assert plan_storage(files).augment == "small" and plan_storage(files, img_size=16).storage == (16, 16)
    with pytest.raises(ValueError, match="augment must be one of"):
        plan_storage(files, augment="big")


def test_photo_val_and_test_are_the_eval_resize_and_center_crop_of_the_stored_images(tmp_path):
    root = tmp_path / "photos"
    _photo_folder(root, per_class=5)
    train = build_cached(root, "train", img_size=32)  # the whole folder, nothing carved
    val = build_cached(root, "val", img_size=32, val_fraction=0.4, seed=1)
    assert val.image_size == (32, 32) and isinstance(val.images, np.memmap)  # a view: nothing copied
    assert len(val) == 4 and sorted(val.labels.tolist()) == [0, 0, 1, 1]
    stored = {r[2:34, 2:34].tobytes() for r in np.asarray(train.images)}  # 36 -> center 32: offset (36 - 32) // 2
    assert all(r.tobytes() in stored for r in np.asarray(val.images))
    raw = build_cached(root, "val", img_size=32, val_fraction=0.4, seed=1, eval_crop=False)
    assert raw.image_size == (36, 36)  # for a per-sample eval transform that crops by itself
    other = build_cached(root, "val", img_size=32, storage_size=48, val_fraction=0.4, seed=1)
    assert other.image_size == (32, 32) and isinstance(other.images, np.memmap)  # resized 48 -> 36, cropped: built
    x, _ = next(iter(build_loader(val, 4, train=False)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8


def test_unsupported_image_formats_are_ignored_and_said(tmp_path):
    root = tmp_path / "photos"
    _photo_folder(root, per_class=2)
    Image.new("P", (8, 8)).save(root / "ants" / "imageNotFound.gif")
    with pytest.warns(UserWarning, match=r"1 file\(s\) in .*photos are in image formats .* imageNotFound.gif"):
        ds = build_cached(root, img_size=32)
    assert len(ds) == 4 and ds.meta["ignored_files"] == 1


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="shared hymenoptera photos not present")
def test_real_photos_train_and_val_folders(tmp_path):
    kw = dict(cache_dir=tmp_path / "cache", num_workers=0, img_size=64, val_fraction=0.1)
    from vitkit.data import build_dataset

    with pytest.warns(UserWarning, match="imageNotFound.gif"):
        train = build_dataset(HYMENOPTERA, "train", **kw)
    val = build_dataset(HYMENOPTERA, "val", **kw)
    test = build_dataset(HYMENOPTERA, "test", **kw)
    assert len(train) == 244 and train.image_size == (73, 73)  # 245 files less the GIF; val/ is not carved from
    assert train.meta["augment"] == "photo" and train.meta["source_short_side"] > 64
    assert len(val) == 153 and val.image_size == (64, 64) and val.meta["split_source"] == "hymenoptera/val"
    assert np.bincount(val.labels).tolist() == [70, 83]
    assert len(test) == 153 and test.meta["separate_test"] is False
    assert test.meta["test_split"].startswith("none: no separate test set") and "hymenoptera/val" in test.meta[
        "test_split"]
    assert train.images.nbytes < 5e6  # 244 x 73 x 73 x 3: the size follows the training resolution


# -- training on image folders ----------------------------------------------------------------------------------------


def _folder_config(tmp_path: Path, root: Path, *overrides: str):
    from tests.helpers.train import tiny_config

    return tiny_config(tmp_path / "runs", f"data.name={root}", "data.kwargs={}", "data.img_size=16",
                       "data.batch_size=2", "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}",
                       "train.epochs=1", *overrides)


def test_a_plain_class_folder_trains_with_random_resized_crops_and_says_there_is_no_test_set(tmp_path):
    import time

    from vitkit.train.distributed import setup_distributed
    from vitkit.train.engine import Trainer

    root = tmp_path / "photos"
    _photo_folder(root)
    cfg = _folder_config(tmp_path, root, "data.val_fraction=0.25")
    trainer = Trainer(cfg, None, setup_distributed(cfg.dist, "cpu"), torch.device("cpu"), time.perf_counter())
    assert trainer.train_ds.image_size == (18, 18) and trainer.val_ds.image_size == (16, 16)  # 16 / 0.875 stored
    assert trainer.size == (16, 16) and trainer.raw_model.config["img_size"] in ((16, 16), [16, 16])
    assert trainer.augment.crop == "resized" and trainer.augment.flip and trainer.augment.out_size == (16, 16)
    summary = trainer.run()
    assert summary["steps"] == 3 and summary["test_images"] == 2  # 6 train / 2 val; the test pass is the val split
    assert summary["splits"] == {"train": "photos minus 0.25 carved for val", "val": "0.25 of photos",
                                 "test": "0.25 of photos"}
    assert summary["test_split"].startswith("none: no separate test set, so the test figures are on the validation")
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["test_split"] == summary["test_split"]


def test_train_and_val_folders_validate_on_val_and_the_summary_names_the_test_split(tmp_path):
    from vitkit.train import train

    root = tmp_path / "photos"
    _photo_folder(root / "train")
    _photo_folder(root / "val", per_class=1)
    summary = train(_folder_config(tmp_path, root))  # data.val_fraction is 0.1 by default: val/ wins
    assert summary["splits"] == {"train": "photos/train", "val": "photos/val", "test": "photos/val"}
    assert summary["test_split"] == ("none: no separate test set, so the test figures are on the validation split "
                                     "(photos/val)")
    assert summary["steps"] == 4 and summary["test_images"] == 2
    _photo_folder(root / "test", per_class=2)
    summary = train(_folder_config(tmp_path, root))
    assert summary["test_split"] == "photos/test" and summary["test_images"] == 4


def test_training_with_random_resized_crops_resumes_bit_identically(tmp_path):
    from tests.helpers.train import last_weights
    from vitkit.train import train

    root = tmp_path / "photos"
    _photo_folder(root, per_class=5)  # 8 train, 2 val images: 4 steps an epoch
    sets = ["data.val_fraction=0.2", "train.epochs=2", "train.deterministic=true", "checkpoint.every_steps=1",
            "data.mixup_alpha=0.4", "train.label_smoothing=0.1"]

    def die_at_step_6(state):
        if state.step == 6:
            raise RuntimeError("injected fault")

    with pytest.raises(RuntimeError, match="injected fault"):
        train(_folder_config(tmp_path / "a", root, *sets), callbacks=[die_at_step_6])  # last.pt: step 6 of 8
    run_dir = next((tmp_path / "a" / "runs").iterdir())
    resumed = train(_folder_config(tmp_path / "a", root, *sets, f"checkpoint.resume={run_dir}"))
    straight = train(_folder_config(tmp_path / "b", root, *sets))
    assert resumed["steps"] == straight["steps"] == 8
    a, b = last_weights(run_dir), last_weights(straight["run_dir"])
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"

"""The photo benchmarks' --quick runs on a small generated photo folder, so their code paths cannot rot unrun."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their shared _common helper
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """train/ + val/ of two classes, photo-sized (short side above CIFAR's) JPEGs of different shapes."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for label, colour in (("ants", (200, 60, 40)), ("bees", (40, 60, 200))):
            folder = tmp_path / "photos" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = 80 + 8 * i, 120 - 4 * i
                pixels = np.clip(rng.normal(colour, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return tmp_path / "photos"


def test_data_throughput_photo_case_delivers_both_paths(photo_folder, tmp_path):
    out = tmp_path / "data_throughput.json"
    args = ["--quick", "--photo-root", str(photo_folder), "--cache-dir", str(tmp_path / "cache"), "--workers", "0",
            "--out", str(out)]
    assert load_benchmark("data_throughput").main(args) == 0
    photo = json.loads(out.read_text())["photo"]
    assert photo["files"] == 16 and photo["img_size"] == 64
    assert photo["baseline"]["images"] == photo["vitkit"]["images"] == 16  # 2 batches of 8 each
    assert photo["speedup"] > 0 and photo["cache_build"]["images"] == 16


@pytest.mark.slow
def test_finetune_photos_runs_both_sides_from_one_file(photo_folder, tmp_path):
    out = tmp_path / "finetune_photos.json"
    assert load_benchmark("finetune_photos").main(["--quick", "--data", str(photo_folder), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pretrained"]["made_here"] and result["quick"]
    for side in ("vitkit", "timm"):
        assert result[side]["train_images"] > 0 and result[side]["images_per_second"] > 0
        assert 0 <= result[side]["val_top1_last_epoch"] <= 100
    assert result["speedup"] == pytest.approx(
        result["vitkit"]["images_per_second"] / result["timm"]["images_per_second"], abs=0.01)

"""One preprocessing from training to serving: a model trained by `vitkit train` on a photo folder gives the same
label for every image through eval, predict and serve, and (>= 99%) through ONNX Runtime and transformers' pipeline.

The roads are benchmarks/preprocess_agreement.py's (loaded by path), so the benchmark cannot rot unrun.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
HYMENOPTERA = ROOT.parent / "shared" / "data" / "hymenoptera"
TINY_TRAINING = ["model.kwargs={embed_dim: 32, depth: 2, num_heads: 2}", "train.epochs=2", "data.batch_size=8",
                 "train.threads=1", "data.num_workers=0"]

pytestmark = pytest.mark.slow


def load_agreement():
    spec = importlib.util.spec_from_file_location("preprocess_agreement", ROOT / "benchmarks" / "preprocess_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_photo_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """train/ and val/ of two colour classes: odd sizes (short sides above CIFAR size, so they count as photos),
    JPEG and PNG, one grayscale and one palette image among the validation files."""
    rng = np.random.default_rng(seed)
    colours = {"ants": (170, 60, 40), "bees": (40, 80, 170)}
    for split, count in per_class.items():
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = int(rng.integers(70, 150)), int(rng.integers(70, 150))
                pixels = np.clip(rng.normal(colour, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
                top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                pixels[top : top + h // 3, left : left + w // 3] = rng.integers(0, 256, 3)  # a patch to look past
                image = Image.fromarray(pixels)
                if split == "val" and i == 0:
                    image = image.convert("L" if name == "ants" else "P")
                if i % 2:
                    image.convert("RGB").save(folder / f"{name}{i}.jpg", quality=90)
                else:
                    image.save(folder / f"{name}{i}.png")
    return root


def _check(result: dict) -> None:
    assert not result["serve_refused"], result["serve_refused"]
    assert result["identical_eval_predict_serve"], result["disagreements"]
    for road in ("eval", "serve", "onnx", "hf"):
        assert result["agreement_with_predict"][road] >= 0.99, (road, result["disagreements"])


def test_every_road_gives_the_same_label_on_a_small_photo_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    agreement = load_agreement()
    data = write_photo_folder(tmp_path / "photos", {"train": 8, "val": 6})
    checkpoint = agreement.train_checkpoint(str(data), tmp_path / "runs", 32, TINY_TRAINING)
    result = agreement.compare(checkpoint, str(data), "val", tmp_path / "work")
    assert result["images"] == 12 and set(result["seconds"]) == {"eval", "predict", "serve", "onnx", "hf"}
    # photos are evaluated on a center crop, and the checkpoint says so
    assert result["preprocessing"]["crop_pct"] == 0.875 and result["preprocessing"]["resize_size"] == [36, 36]
    _check(result)


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"{HYMENOPTERA} is not present")
def test_every_road_gives_the_same_label_on_hymenoptera_val(tmp_path, monkeypatch):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    agreement = load_agreement()
    checkpoint = agreement.train_checkpoint(str(HYMENOPTERA), tmp_path / "runs", 32, TINY_TRAINING)
    result = agreement.compare(checkpoint, str(HYMENOPTERA), "val", tmp_path / "work")
    assert result["images"] >= 150
    _check(result)

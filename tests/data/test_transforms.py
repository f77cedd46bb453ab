"""torchvision v2 per-sample pipelines and their use through the loader's per-sample path."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from vitkit.data import build_dataset, build_eval_transform, build_loader, build_train_transform
from vitkit.data.transforms import eval_resize_size

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _image(size: int = 40) -> torch.Tensor:
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("options", [
    {},
    {"random_crop_padding": 4},
    {"auto_augment": "randaugment", "magnitude": 7, "num_ops": 2},
    {"auto_augment": "trivialaugment"},
    {"auto_augment": "autoaugment"},
    {"auto_augment": "autoaugment-cifar10"},
    {"color_jitter": 0.4, "random_erasing": 1.0},
])
def test_train_transform_outputs_normalised_float_of_the_requested_size(options):
    t = build_train_transform(24, mean=MEAN, std=STD, **options)
    torch.manual_seed(0)
    out = t(_image())
    assert out.dtype == torch.float32 and out.shape == (3, 24, 24)
    assert float(out.min()) >= -2.0 - 1e-5 and float(out.max()) <= 2.0 + 1e-5  # (0..1 - 0.5) / 0.25
    if options.get("random_erasing"):
        assert (out == 0).all(dim=0).sum() > 0  # an erased patch (value 0) exists


def test_train_transform_contains_the_requested_steps():
    t = build_train_transform(24, mean=MEAN, std=STD, auto_augment="randaugment", color_jitter=0.3, random_erasing=0.25)
    kinds = [type(s) for s in t.transforms]
    for expected in (v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandAugment, v2.ColorJitter, v2.Normalize,
                     v2.RandomErasing):
        assert expected in kinds
    assert kinds.index(v2.RandomErasing) > kinds.index(v2.Normalize)
    crop = build_train_transform(32, mean=MEAN, std=STD, random_crop_padding=4, hflip=0.0)
    assert v2.RandomCrop in [type(s) for s in crop.transforms] and v2.RandomHorizontalFlip not in [
        type(s) for s in crop.transforms]


def test_eval_transform_resizes_by_crop_pct_then_center_crops():
    assert eval_resize_size(224, 0.875) == (256, 256)
    t = build_eval_transform(16, mean=(0.0,) * 3, std=(1.0,) * 3, crop_pct=0.5, interpolation="nearest")
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[:, 16:48, 16:48] = 255  # the centre half survives resize-to-32 + center-crop-16, borders do not
    out = t(image)
    assert out.shape == (3, 16, 16) and torch.allclose(out, torch.ones_like(out))
    full = build_eval_transform(16, mean=(0.0,) * 3, std=(1.0,) * 3, crop_pct=1.0, interpolation="nearest")(image)
    assert full.shape == (3, 16, 16) and float(full.mean()) < 0.5


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="auto_augment must be one of"):
        build_train_transform(8, mean=MEAN, std=STD, auto_augment="randaug")
    with pytest.raises(ValueError, match="interpolation"):
        build_eval_transform(8, mean=MEAN, std=STD, interpolation="lanczos9")
    with pytest.raises(ValueError, match="crop_pct"):
        build_eval_transform(8, mean=MEAN, std=STD, crop_pct=0.0)


def test_per_sample_loader_path_delivers_normalised_batches():
    ds = build_dataset("synthetic", "train", num_samples=40, image_size=16)
    t = build_train_transform(12, mean=ds.mean, std=ds.std, auto_augment="trivialaugment")
    loader = build_loader(ds, 8, train=True, transform=t, num_workers=2)
    assert loader.num_workers == 2 and loader.persistent_workers and not loader.pin_memory
    batches = list(loader)
    assert len(batches) == 5
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (8, 3, 12, 12) and y.dtype == torch.int64
    assert abs(float(torch.cat([b[0] for b in batches]).mean())) < 0.5  # normalised with dataset statistics
    assert len(list(loader)) == 5  # persistent workers serve the next epoch

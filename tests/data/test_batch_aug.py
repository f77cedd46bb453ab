"""BatchAugment and normalize_batch: shapes, crop/flip semantics, soft targets, determinism."""

from __future__ import annotations

import pytest
import torch

from vitkit.data import BatchAugment, normalize_batch, soft_targets

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _batch(b: int = 16, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g), torch.arange(b) % 10


def test_normalize_batch_values():
    x = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize_batch(x, MEAN, STD)
    assert out.dtype == torch.float32
    expected = (1.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    f = torch.ones(1, 3, 1, 1)
    normalize_batch(f, MEAN, STD)
    assert torch.equal(f, torch.ones(1, 3, 1, 1))  # float input is not modified in place
    with pytest.raises(ValueError, match="channels"):
        normalize_batch(x, (0.5, 0.5), (0.2, 0.2))


def test_no_aug_is_plain_normalisation_with_int_targets():
    x, y = _batch()
    aug = BatchAugment(10, MEAN, STD, crop_padding=0, flip=False)
    out, t = aug(x, y)
    torch.testing.assert_close(out, normalize_batch(x, MEAN, STD))
    assert t.dtype == torch.int64 and torch.equal(t, y)


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x, y = _batch(b=32)
    aug = BatchAugment(10, (0.0,) * 3, (1 / 255,) * 3, crop_padding=2, flip=False, generator=torch.Generator().manual_seed(1))
    out, _ = aug(x, y)
    out = out.round().to(torch.uint8)  # undo the identity-like normalisation
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(32):
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])]
        assert matches, f"sample {i} is not a window of its padded image"
        shifts.add(matches[0])
    assert len(shifts) > 5  # offsets really vary per sample


def test_flip_flips_about_half_of_the_batch():
    x, y = _batch(b=64)
    aug = BatchAugment(10, (0.0,) * 3, (1 / 255,) * 3, crop_padding=0, flip=True, generator=torch.Generator().manual_seed(2))
    out = aug(x, y)[0].round().to(torch.uint8)
    flipped = sum(torch.equal(out[i], x[i].flip(-1)) for i in range(64))
    kept = sum(torch.equal(out[i], x[i]) for i in range(64))
    assert flipped + kept == 64 and 16 < flipped < 48


def test_label_smoothing_only():
    x, y = _batch()
    _, t = BatchAugment(10, MEAN, STD, label_smoothing=0.1)(x, y)
    assert t.shape == (16, 10)
    torch.testing.assert_close(t.sum(1), torch.ones(16))
    assert torch.allclose(t.max(1).values, torch.full((16,), 0.9 + 0.01))
    assert torch.equal(t.argmax(1), y)


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixing_gives_soft_targets_combined_with_smoothing(mixup, cutmix):
    x, y = _batch()
    aug = BatchAugment(10, MEAN, STD, mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.1,
                       generator=torch.Generator().manual_seed(3))
    out, t = aug(x, y)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert t.shape == (16, 10) and t.dtype == torch.float32
    torch.testing.assert_close(t.sum(1), torch.ones(16))
    assert float(t.min()) >= 0.1 / 10 - 1e-6  # smoothing floor survives mixing
    assert (t > 0.011).sum(1).max() == 2  # each target mixes two classes


def test_generator_makes_augmentation_reproducible():
    x, y = _batch()
    kw = dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    a = BatchAugment(10, MEAN, STD, generator=torch.Generator().manual_seed(7), **kw)(x, y)
    b = BatchAugment(10, MEAN, STD, generator=torch.Generator().manual_seed(7), **kw)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mix_prob_zero_keeps_one_hot_soft_targets():
    x, y = _batch()
    _, t = BatchAugment(10, MEAN, STD, mixup_alpha=1.0, mix_prob=0.0)(x, y)
    # mix_prob=0 disables mixing entirely, so plain labels come back
    assert t.dtype == torch.int64 and torch.equal(t, y)


def test_out_size_resizes():
    x, y = _batch(size=8)
    out, _ = BatchAugment(10, MEAN, STD, out_size=16)(x, y)
    assert out.shape == (16, 3, 16, 16)


def test_invalid_arguments_and_labels():
    with pytest.raises(ValueError, match="label_smoothing"):
        BatchAugment(10, MEAN, STD, label_smoothing=1.0)
    x, y = _batch()
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        BatchAugment(10, MEAN, STD, label_smoothing=0.1)(x, y + 5)
    with pytest.raises(ValueError, match="labels must lie"):
        soft_targets(torch.tensor([3]), 3)


def test_crop_and_flip_together_give_a_possibly_mirrored_window():
    x, y = _batch(b=32)
    aug = BatchAugment(10, (0.0,) * 3, (1 / 255,) * 3, crop_padding=2, generator=torch.Generator().manual_seed(4))
    out = aug(x, y)[0].round().to(torch.uint8)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    mirrored = 0
    for i in range(32):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 4 < mirrored < 28

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


# -- RandomResizedCrop for photos: batched, seeded, resumable -------------------------------------------------------


def _photos(b: int = 24, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth uint8 images (sums of low-frequency waves): interpolation differences stay small, crops differ."""
    g = torch.Generator().manual_seed(5)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    freq = torch.rand(b, 3, 2, generator=g) * 0.3
    phase = torch.rand(b, 3, 1, 1, generator=g) * 6
    waves = torch.sin(xx * freq[..., 0:1, None] + phase) + torch.cos(yy * freq[..., 1:2, None])
    images = (waves * 60 + 128).clamp(0, 255).round().to(torch.uint8)
    return images, torch.arange(b) % 10


IDENTITY = dict(mean=(0.0,) * 3, std=(1 / 255,) * 3)  # normalisation that leaves 0..255 values


def test_random_resized_boxes_follow_torchvision_ranges():
    from vitkit.data.batch_aug import random_resized_boxes

    boxes = random_resized_boxes(4000, 60, 80, scale=(0.2, 0.9), ratio=(0.5, 2.0),
                                 generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 60).all() and (left + w <= 80).all()
    area = (h * w).double() / (60 * 80)
    assert area.min() >= 0.2 - 0.02 and area.max() <= 0.9 + 0.02 and area.std() > 0.15  # rounding only
    aspect = (w / h).double()
    assert aspect.min() >= 0.5 * 0.9 and aspect.max() <= 2.0 * 1.1
    assert len({tuple(b.tolist()) for b in boxes}) > 3000  # boxes really vary per image
    narrow = random_resized_boxes(8, 100, 10, scale=(0.9, 1.0), ratio=(1.0, 1.0),
                                  generator=torch.Generator().manual_seed(0))  # no square box of 90% area fits
    assert narrow.tolist() == [[45, 0, 10, 10]] * 8  # the fallback: the centre crop at the clamped ratio


@pytest.mark.parametrize("size", [(24, 24), (12, 30)])
def test_batched_resized_crop_is_torchvisions_resized_crop_of_the_same_box(size):
    """Enlarged or shrunk, every crop is torchvision's ``resized_crop`` (antialiased bilinear) of its box, exactly,
    and ``flip`` mirrors it."""
    from torchvision.transforms.v2 import functional as TF

    from vitkit.data.batch_aug import random_resized_boxes, resized_crops

    x, _ = _photos(b=64)
    boxes = random_resized_boxes(64, 40, 40, generator=torch.Generator().manual_seed(1))
    flip = torch.arange(64) % 3 == 0
    out = resized_crops(x, boxes, size, flip)
    assert out.shape == (64, 3, *size) and out.dtype == torch.float32
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i], top, left, h, w, list(size), antialias=True)
        assert torch.equal(out[i], (ref.flip(-1) if flip[i] else ref).float()), (i, h, w)


def test_resized_crop_and_flip_batch_is_deterministic_per_seed_and_mirrors_half():
    from torchvision.transforms.v2 import functional as TF

    from vitkit.data.batch_aug import random_resized_boxes

    x, y = _photos()

    def run(seed: int):
        return BatchAugment(10, **IDENTITY, crop="resized", out_size=24, generator=torch.Generator().manual_seed(seed))(
            x, y)[0]

    a, b, c = run(7), run(7), run(8)
    assert a.shape == (24, 3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    boxes = random_resized_boxes(24, 40, 40, generator=torch.Generator().manual_seed(7))  # the same draws, in order
    mirrored = 0
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i].float(), top, left, h, w, [24, 24], antialias=True)
        plain, flipped = float((a[i] - ref).abs().mean()), float((a[i] - ref.flip(-1)).abs().mean())
        assert min(plain, flipped) < 2
        mirrored += flipped < plain
    assert 4 < mirrored < 20


def test_resized_crop_resumes_bit_identically_from_the_saved_generator_state():
    from vitkit.train.checkpoint import capture_rng, restore_rng

    x, y = _photos()
    kw = dict(crop="resized", out_size=32, mixup_alpha=0.4, label_smoothing=0.1)
    gen = torch.Generator().manual_seed(11)
    aug = BatchAugment(10, MEAN, STD, generator=gen, **kw)
    aug(x, y)
    saved = capture_rng(gen)  # what last.pt stores
    expected = [aug(x, y) for _ in range(3)]
    fresh = torch.Generator().manual_seed(999)
    restore_rng(saved, fresh)
    resumed = BatchAugment(10, MEAN, STD, generator=fresh, **kw)
    for want in expected:
        got = resumed(x, y)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_resized_crop_on_the_default_size_and_argument_errors():
    x, y = _photos(b=4)
    out, t = BatchAugment(10, MEAN, STD, crop="resized", flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, y)
    torch.testing.assert_close(out, normalize_batch(x, MEAN, STD), atol=1e-4, rtol=0)  # the whole image, no flip
    assert torch.equal(t, y)
    with pytest.raises(ValueError, match="crop must be one of"):
        BatchAugment(10, MEAN, STD, crop="random")
    with pytest.raises(ValueError, match="scale"):
        BatchAugment(10, MEAN, STD, crop="resized", scale=(0.5, 0.2))


def test_output_buffers_are_reused_only_once_nothing_holds_the_batch():
    """The float output of the resized crop reuses memory (no fresh 38 MB mmap per batch), but never under a batch
    still held: by the caller, by a view of it, or by an autograd graph that saved it."""
    x, y = _photos(b=8)
    aug = BatchAugment(10, MEAN, STD, crop="resized", out_size=16, generator=torch.Generator().manual_seed(0))
    first = aug(x, y)[0]
    address = first.data_ptr()
    del first
    assert aug(x, y)[0].data_ptr() == address  # dropped, then handed out again

    held = [aug(x, y)[0] for _ in range(5)]  # all alive at once: five different memories, none overwritten
    copies = [h.clone() for h in held]
    assert len({h.data_ptr() for h in held}) == 5
    assert all(torch.equal(h, c) for h, c in zip(held, copies))

    view = held[0][:2]
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    graph = torch.nn.functional.conv2d(held[1], weight).sum()  # autograd keeps held[1] for the weight's gradient
    pointers = {held[0].data_ptr(), held[1].data_ptr()}
    del held, copies
    fresh = [aug(x, y)[0] for _ in range(4)]
    assert not pointers & {f.data_ptr() for f in fresh}
    assert view.shape == (2, 3, 16, 16) and graph.requires_grad

"""The preprocessing spec: its stored form, its geometry, one image vs a batch, and where a model's comes from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitkit
from vitkit.data.arrays import ArrayDataset
from vitkit.data.preprocess import (
    Preprocessing,
    eval_resize_size,
    evaluation_transform,
    training_preprocessing,
)

RGB = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _random(shape, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_stored_form_round_trips_and_names_bad_keys():
    spec = Preprocessing((24, 32), crop_pct=0.875, interpolation="bilinear", resize_mode="squash", **RGB)
    stored = spec.to_dict()
    assert stored["resize_size"] == [27, 36] and stored["channel_order"] == "RGB"
    assert Preprocessing.from_dict(stored) == spec
    with pytest.raises(ValueError, match=r"unknown preprocessing keys \['crop'\]"):
        Preprocessing.from_dict({**stored, "crop": 0.9})
    with pytest.raises(ValueError, match=r"lacks \['mean'\]"):
        Preprocessing.from_dict({"img_size": [8, 8], "std": [1.0] * 3})


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(interpolation="lanczos"), "interpolation must be one of"),
    (dict(crop_pct=0.0), "crop_pct must be in"),
    (dict(resize_mode="fit"), "resize_mode must be one of"),
    (dict(in_chans=2, mean=(0.5,) * 2, std=(0.5,) * 2), "1 or 3 input channels"),
    (dict(mean=(0.5,)), "the model takes 3 channels"),
    (dict(std=(0.5, 0.0, 0.5)), "std must be positive"),
    (dict(channel_order="BGR"), "channel_order"),
])
def test_bad_values_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocessing((8, 8), **{**RGB, **kwargs})


def test_resize_size_is_img_size_over_crop_pct_rounded_down():
    assert eval_resize_size(224, 0.875) == (256, 256)
    assert eval_resize_size(224, 0.9) == (248, 248)
    assert eval_resize_size((32, 48), 1.0) == (32, 48)


def test_shorter_side_keeps_the_aspect_and_crops_the_centre_rounding_down():
    # columns hold their own index, so the crop offset can be read off the output
    image = torch.arange(7, dtype=torch.uint8).repeat(3, 4, 1)  # (3, 4, 7): shorter side already 4
    spec = Preprocessing((4, 4), mean=(0.0,) * 3, std=(1 / 255,) * 3, crop_pct=1.0, interpolation="nearest")
    out = spec(image)
    assert out.shape == (3, 4, 4)
    assert out[0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # left = (7 - 4) // 2 = 1
    assert spec.resized_shape(50, 80) == (4, 6) and spec.resized_shape(81, 50) == (6, 4)  # longer side rounded down


def test_crop_pct_resizes_first_then_crops():
    spec = Preprocessing((16, 16), mean=(0.0,) * 3, std=(1.0,) * 3, crop_pct=0.5, interpolation="nearest")
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[:, 16:48, 16:48] = 255  # the centre half survives resize-to-32 + crop-16, the borders do not
    out = spec(image)
    assert out.shape == (3, 16, 16) and torch.equal(out, torch.ones_like(out))
    squash = Preprocessing((8, 8), mean=(0.0,) * 3, std=(1.0,) * 3, resize_mode="squash")
    assert squash.resized_shape(30, 90) == (8, 8) and squash(_random((3, 30, 90))).shape == (3, 8, 8)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_a_batch_equals_its_images_one_by_one(interpolation):
    spec = Preprocessing((12, 12), crop_pct=0.875, interpolation=interpolation, **RGB)
    images = _random((5, 3, 29, 41))
    batched = spec.batch(images)
    single = torch.stack([spec(img) for img in images])
    assert batched.shape == (5, 3, 12, 12) and batched.dtype == torch.float32
    assert torch.equal(batched, single)  # bit for bit: the cached eval batch and predict's images agree
    assert torch.equal(spec.stack(list(images)), single)
    assert torch.equal(spec.transform()(images[0]), single[0])


def test_normalisation_and_channels():
    spec = Preprocessing((8, 8), **RGB)
    out = spec(torch.full((3, 20, 10), 255, dtype=torch.uint8))
    assert torch.allclose(out, torch.full_like(out, (1.0 - 0.5) / 0.25))
    gray = Preprocessing((8, 8), mean=(0.5,), std=(0.5,), in_chans=1)
    assert gray(_random((3, 10, 10))).shape == (1, 8, 8)  # RGB -> luminance for a 1-channel model
    assert spec(_random((1, 10, 10))).shape == (3, 8, 8)  # a grayscale tensor for an RGB model
    with pytest.raises(TypeError, match="uint8"):
        spec.batch(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="4 channels"):
        spec(_random((4, 10, 10)))


def test_pil_images_are_accepted():
    from PIL import Image

    array = _random((3, 9, 13)).permute(1, 2, 0).numpy()
    spec = Preprocessing((8, 8), **RGB)
    assert torch.equal(spec(Image.fromarray(np.ascontiguousarray(array))),
                       spec(torch.from_numpy(array).permute(2, 0, 1)))


def _model_checkpoint(tmp_path, name, metadata=None, **overrides):
    torch.manual_seed(0)
    model = vitkit.create_model("vit_tiny_patch4_32", depth=1, embed_dim=16, num_heads=2, **overrides)
    path = vitkit.save_checkpoint(model, tmp_path / name, metadata=metadata)
    return vitkit.load_checkpoint(path)


def test_a_models_preprocessing_comes_from_its_checkpoint_first(tmp_path):
    stored = Preprocessing((32, 32), crop_pct=0.9, interpolation="bicubic", **RGB)
    model = _model_checkpoint(tmp_path, "stored.safetensors", {"preprocessing": stored.to_dict(), "dataset": "x"})
    assert Preprocessing.from_model(model) == stored

    plain = _model_checkpoint(tmp_path, "plain.safetensors")  # no record: the registry's data_config
    spec = Preprocessing.from_model(plain)
    assert spec.img_size == (32, 32) and spec.crop_pct == plain.data_config["crop_pct"]
    assert spec.interpolation == "bicubic" and spec.mean == pytest.approx(tuple(plain.data_config["mean"]))

    # a training-run checkpoint from before the record existed was evaluated whole, resized bilinearly
    legacy = _model_checkpoint(tmp_path, "legacy.safetensors", {"dataset": "cifar10", "mean": [0.1] * 3,
                                                                "std": [0.2] * 3})
    spec = Preprocessing.from_model(legacy)
    assert (spec.crop_pct, spec.interpolation, spec.mean) == (1.0, "bilinear", (0.1,) * 3)

    gray = _model_checkpoint(tmp_path, "gray.safetensors", {"preprocessing": stored.to_dict()}, in_chans=1)
    with pytest.raises(ValueError, match="feeds 3 channels but the model takes 1"):
        Preprocessing.from_model(gray)


def _dataset(meta, size=36):
    images = np.zeros((2, size, size, 3), np.uint8)
    return ArrayDataset(images, np.zeros(2, np.int64), ["a"], (0.5,) * 3, (0.25,) * 3, meta=meta)


def test_a_training_run_records_what_its_evaluation_did():
    photos = _dataset({"augment": "photo", "eval_crop_pct": 0.875}, size=32)  # center crops of the stored images
    spec = training_preprocessing(32, **RGB, in_chans=3, crop_pct=0.875, eval_dataset=photos)
    assert (spec.crop_pct, spec.interpolation, spec.resize_size) == (0.875, "bilinear", (36, 36))
    # the view holds the crops already: the loop's transform only normalises them
    image = _random((3, 32, 32))
    expected = (image.float() / 255 - 0.5) / 0.25
    assert torch.allclose(evaluation_transform(spec, photos)(image), expected)

    stored_whole = _dataset({"augment": "photo"})  # the per-sample path gets the stored 36 x 36 images
    assert torch.equal(evaluation_transform(spec, stored_whole)(_random((3, 36, 36))),
                       spec(_random((3, 36, 36))))

    small = _dataset({"augment": "small"}, size=32)  # CIFAR-sized: evaluated whole
    assert training_preprocessing(32, **RGB, in_chans=3, crop_pct=0.875, eval_dataset=small).crop_pct == 1.0


def test_large_jpegs_decode_at_reduced_size_but_never_below_the_resize():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(_random((3, 300, 400)).permute(1, 2, 0).numpy())).save(buf, "JPEG")
    spec = Preprocessing((16, 16), **RGB)  # decode_min_size 64 x 64: a 1/4 decode (100 x 75) still covers it
    image = spec.decode(buf.getvalue(), "big.jpg")
    assert spec.decode_min_size == (64, 64) and tuple(image.shape) == (3, 75, 100)
    full = Preprocessing((100, 100), **RGB).decode(buf.getvalue())  # would need 400 x 400: decoded whole
    assert tuple(full.shape) == (3, 300, 400)

"""The inference spec: labels and the preprocessing read from a checkpoint, and its transform."""

from __future__ import annotations

import pytest
import torch

import vitkit
from tests.helpers.infer import CLASS_NAMES, tiny_model
from vitkit.data.preprocess import Preprocessing
from vitkit.infer import InferenceSpec


def test_spec_reads_checkpoint_metadata(tmp_path):
    model = tiny_model()
    vitkit.save_checkpoint(model, tmp_path / "a.safetensors", metadata={"class_names": CLASS_NAMES, "mean": [0.1] * 3,
                                                                      "std": [0.2] * 3})
    spec = InferenceSpec.from_model(vitkit.load_checkpoint(tmp_path / "a.safetensors"))
    assert spec.class_names == tuple(CLASS_NAMES)
    assert spec.mean == (0.1, 0.1, 0.1) and spec.std == (0.2, 0.2, 0.2)  # the run's stats beat the registry's
    assert spec.img_size == (32, 32) and spec.in_chans == 3

    vitkit.save_checkpoint(model, tmp_path / "b.safetensors")
    spec = InferenceSpec.from_model(vitkit.load_checkpoint(tmp_path / "b.safetensors"))
    assert spec.class_names == tuple(f"class_{i}" for i in range(10))
    assert spec.mean == pytest.approx((0.4914, 0.4822, 0.4465))  # data_config of vit_tiny_patch4_32

    vitkit.save_checkpoint(model, tmp_path / "c.safetensors", metadata={"class_names": ["a", "b"]})
    with pytest.raises(ValueError, match="2 class names but the model has 10 outputs"):
        InferenceSpec.from_model(vitkit.load_checkpoint(tmp_path / "c.safetensors"))


def test_eval_transform_resizes_crops_and_normalises():
    spec = InferenceSpec((32, 32), (0.5,) * 3, (0.25,) * 3, crop_pct=0.875, class_names=("a",))
    image = torch.full((3, 50, 80), 255, dtype=torch.uint8)
    out = spec.transform()(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (1.0 - 0.5) / 0.25))
    gray = InferenceSpec((8, 8), (0.5,), (0.5,), in_chans=1, class_names=("a",)).transform()(image)
    assert gray.shape == (1, 8, 8)


def test_the_spec_is_the_checkpoints_stored_preprocessing(tmp_path):
    stored = Preprocessing((32, 32), (0.2,) * 3, (0.3,) * 3, crop_pct=0.875, interpolation="bilinear")
    vitkit.save_checkpoint(tiny_model(), tmp_path / "d.safetensors",
                           metadata={"class_names": CLASS_NAMES, "preprocessing": stored.to_dict()})
    spec = InferenceSpec.from_model(vitkit.load_checkpoint(tmp_path / "d.safetensors"))
    assert spec.preprocessing == stored and spec.class_names == tuple(CLASS_NAMES)
    assert "class_names" not in spec.to_dict()  # the stored record is the preprocessing alone
    image = torch.randint(0, 256, (3, 45, 61), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(spec.transform()(image), stored(image))

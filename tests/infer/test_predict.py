"""Prediction: the checkpoint's own labels and eval transform, batched, with bad files skipped by path."""

from __future__ import annotations

import json

import pytest
import torch

import vitkit
from tests.helpers.infer import CLASS_NAMES, save_tiny_checkpoint, tiny_model, write_images
from vitkit.data.decode import BadImageError
from vitkit.infer import InferenceSpec, Predictor, expand_inputs, format_predictions, predict_paths


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
    spec = InferenceSpec((32, 32), 3, (0.5,) * 3, (0.25,) * 3, 0.875, ("a",))
    image = torch.full((3, 50, 80), 255, dtype=torch.uint8)
    out = spec.transform()(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (1.0 - 0.5) / 0.25))
    gray = InferenceSpec((8, 8), 1, (0.5,), (0.5,), 1.0, ("a",)).transform()(image)
    assert gray.shape == (1, 8, 8)


def test_expand_inputs_files_folders_globs(tmp_path):
    paths = write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    found, problems = expand_inputs([tmp_path / "imgs", str(paths[0]), str(tmp_path / "imgs" / "img*"),
                                     str(tmp_path / "missing.jpg"), str(tmp_path / "*.gif")])
    assert found == sorted(paths)  # folder + file + glob, deduplicated; the .txt is not picked up from the folder
    assert len(problems) == 2 and "missing.jpg: no such file" in problems[0] and "matches no files" in problems[1]


def test_predict_skips_bad_images_or_fails_when_strict(tmp_path):
    predictor = Predictor.from_checkpoint(save_tiny_checkpoint(tmp_path / "m.safetensors"))
    good = write_images(tmp_path / "imgs", 3)
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    run = predict_paths(predictor, [*good, bad], batch_size=2, topk=3)
    assert [p.path for p in run.predictions] == [str(p) for p in good]
    assert [f.path for f in run.failures] == [str(bad)]
    for p in run.predictions:
        assert len(p.top) == 3 and all(name in CLASS_NAMES for name, _ in p.top)
        assert p.top[0][1] >= p.top[1][1] >= p.top[2][1]
    # batching does not change answers
    single = predict_paths(predictor, good, batch_size=1, topk=3)
    for a, b in zip(run.predictions, single.predictions):
        assert [n for n, _ in a.top] == [n for n, _ in b.top]
        assert a.top[0][1] == pytest.approx(b.top[0][1], abs=1e-5)
    with pytest.raises(BadImageError, match="broken.jpg"):
        predict_paths(predictor, [bad, *good], strict=True)


def test_predict_precisions_agree(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "m.safetensors")
    images = write_images(tmp_path / "imgs", 3)
    tops = {}
    for precision in ("fp32", "bf16", "int8"):
        run = predict_paths(Predictor.from_checkpoint(ckpt, precision=precision), images, topk=10)
        tops[precision] = torch.tensor([[dict(p.top)[n] for n in CLASS_NAMES] for p in run.predictions])
        assert torch.allclose(tops[precision].sum(1), torch.ones(3), atol=1e-3)
    assert (tops["bf16"] - tops["fp32"]).abs().max() < 0.02
    assert (tops["int8"] - tops["fp32"]).abs().max() < 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        Predictor(tiny_model(), precision="int4")


def test_output_formats():
    from vitkit.infer.predict import Prediction

    preds = [Prediction("a.jpg", [("cat", 0.75), ("dog", 0.25)])]
    assert json.loads(format_predictions(preds, "json")) == [
        {"path": "a.jpg", "top": [{"label": "cat", "prob": 0.75}, {"label": "dog", "prob": 0.25}]}
    ]
    assert format_predictions(preds, "csv").splitlines() == [
        "path,rank,label,prob", "a.jpg,1,cat,0.750000", "a.jpg,2,dog,0.250000"
    ]
    assert "cat 0.750, dog 0.250" in format_predictions(preds, "table")

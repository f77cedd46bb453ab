"""Prediction: the checkpoint's own labels and eval transform, batched, with bad files skipped by path."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.infer import CLASS_NAMES, save_tiny_checkpoint, tiny_model, write_images
from vitkit.data.decode import BadImageError
from vitkit.infer import Predictor, expand_inputs, format_predictions, predict_paths


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


def test_a_folder_is_read_as_training_reads_it_hidden_files_skipped(tmp_path):
    from PIL import Image

    from vitkit.infer.predict import expand_inputs

    for rel in ("a.jpg", "sub/b.png", ".DS_Store.jpg", "._a.jpg", ".ipynb_checkpoints/c.jpg", "sub/.hidden.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / rel, format="PNG" if rel.endswith("png") else "JPEG")
    paths, problems = expand_inputs([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["a.jpg", "sub/b.png"] and not problems

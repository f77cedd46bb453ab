"""One model, every road from a photo to a label: do they agree, image by image?

Trains a small ViT on an image folder with ``vitkit train`` (or takes ``--checkpoint``), then labels every image of
a split five ways:

- ``eval``: ``vitkit eval`` (evaluate_checkpoint, its per-image predictions);
- ``predict``: ``vitkit predict`` on the split's folder (predict_paths);
- ``serve``: ``vitkit serve``'s application, each image POSTed on its own (FastAPI's TestClient, in process);
- ``onnx``: the ONNX export under ONNX Runtime, fed by the preprocessing stored in the file's metadata;
- ``hf``: transformers' ``pipeline("image-classification")`` on the Hugging Face export folder (its own image
  loading and its image processor, from the exported preprocessor_config.json).

Goal: eval, predict and serve identical on every image; ONNX Runtime and the pipeline agree with them on >= 99%.
The report counts the images whose EXIF orientation is not upright: the pipeline rotates those (PIL's
exif_transpose), vitkit's decoder, like the training cache, does not.

    python benchmarks/preprocess_agreement.py --data ../shared/data/hymenoptera \
        --out benchmarks/results/preprocess_agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp"}
DEFAULT_TRAIN = [
    "model.name=vit_tiny_patch4_32", "model.kwargs={embed_dim: 64, depth: 3, num_heads: 2, patch_size: 8}",
    "data.batch_size=16", "train.epochs=3", "optim.lr=0.001", "schedule.warmup_steps=2",
    "log.progress=none", "log.tensorboard=false", "log.curves=false", "log.report=false",
]


def train_checkpoint(data: str, out_dir: Path, img_size: int, sets: list[str]) -> Path:
    """``vitkit train`` (in this process) on ``data``; returns the run's best.safetensors."""
    from vitkit.cli import main

    args = ["train", "--set", f"data.name={data}", "--set", f"data.img_size={img_size}",
            "--set", f"checkpoint.out_dir={out_dir}"]
    for item in [*DEFAULT_TRAIN, *sets]:
        args += ["--set", item]
    code = main(args)
    if code != 0:
        raise SystemExit(f"vitkit train exited with status {code}")
    best = sorted(out_dir.glob("*/best.safetensors"))
    if not best:
        raise SystemExit(f"vitkit train wrote no best.safetensors under {out_dir}")
    return best[-1]


def _key(path: str | Path) -> str:
    return str(Path(path).resolve())


# Each road returns {path: (label, probability of that label)}; eval reports no probabilities (None).


def by_eval(checkpoint: Path, data: str, split: str) -> dict[str, tuple]:
    from vitkit.train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data, split=split, batch_size=32, keep_predictions=True)
    return {_key(p["path"]): (p["predicted"], None) for p in result["predictions"]}


def by_predict(predictor, paths: list[Path]) -> dict[str, tuple]:
    from vitkit.infer.predict import predict_paths

    run = predict_paths(predictor, paths, batch_size=16, topk=1)
    return {_key(p.path): p.top[0] for p in run.predictions}


def by_serve(predictor, paths: list[Path]) -> tuple[dict[str, tuple], dict[str, str]]:
    """Each image POSTed as its raw bytes; returns the labels and the refusals (path -> status and error)."""
    from fastapi.testclient import TestClient

    from vitkit.infer.serve import create_app

    labels, refused = {}, {}
    with TestClient(create_app(predictor)) as client:
        for path in paths:
            mime = MIME.get(path.suffix.lower(), "application/octet-stream")
            response = client.post("/predict?topk=1", content=path.read_bytes(), headers={"content-type": mime})
            if response.status_code == 200:
                top = response.json()["predictions"][0]
                labels[_key(path)] = (top["label"], top["prob"])
            else:
                refused[_key(path)] = f"{response.status_code} {response.text[:200]}"
    return labels, refused


def by_onnx(model, paths: list[Path], work: Path) -> dict[str, tuple]:
    """The exported file alone: its stored preprocessing and class names, ONNX Runtime for the model."""
    from vitkit.data.decode import BadImageError
    from vitkit.infer.export import OnnxModel, export_model

    export_model(model, "onnx", work / "model.onnx")
    runner = OnnxModel(work / "model.onnx")
    preprocessing, names = runner.preprocessing, runner.class_names
    labels = {}
    for start in range(0, len(paths), 16):
        chunk = paths[start : start + 16]
        decoded = preprocessing.read([str(p) for p in chunk])
        good = [(p, img) for p, img in zip(chunk, decoded) if not isinstance(img, BadImageError)]
        if good:
            probs, top = runner(preprocessing.stack([img for _, img in good])).softmax(dim=-1).max(dim=-1)
            labels.update({_key(p): (names[k], float(q)) for (p, _), q, k in zip(good, probs, top.tolist())})
    return labels


def by_hf_pipeline(model, paths: list[Path], work: Path) -> dict[str, tuple]:
    from transformers import pipeline

    from vitkit.infer.export import export_model

    export_model(model, "hf", work / "hf")
    classify = pipeline("image-classification", model=str(work / "hf"), device="cpu")
    tops = {_key(p): classify(str(p), top_k=1)[0] for p in paths}
    return {k: (top["label"], float(top["score"])) for k, top in tops.items()}


def not_upright(paths: list[Path]) -> list[str]:
    """Files whose EXIF orientation tag asks for a rotation or mirror (tag 0x0112 not 1)."""
    from PIL import Image

    found = []
    for p in paths:
        try:
            with Image.open(p) as im:
                if im.getexif().get(0x0112, 1) != 1:
                    found.append(_key(p))
        except OSError:
            continue
    return found


def compare(checkpoint: Path, data: str, split: str = "val", work: Path | None = None) -> dict[str, Any]:
    """Label the split's images along the five roads and count agreement with ``predict``."""
    import vitkit
    from vitkit.data.preprocess import Preprocessing
    from vitkit.infer.predict import Predictor
    from vitkit.train.evaluate import source_files

    work = Path(work or tempfile.mkdtemp(prefix="agreement-"))
    work.mkdir(parents=True, exist_ok=True)
    model = vitkit.load_checkpoint(checkpoint).eval()
    predictor = Predictor(model)
    from vitkit.data import build_dataset

    spec = Preprocessing.from_model(model)
    ds = build_dataset(data, split, img_size=spec.img_size[0], crop_pct=spec.crop_pct)
    paths = [Path(p) for p in source_files(ds) or []]
    if not paths:
        raise SystemExit(f"{data} {split}: no source files (not an image folder?)")
    truth = {_key(p): ds.classes[int(y)] for p, y in zip(paths, ds.labels.tolist())}
    seconds: dict[str, float] = {}
    answers: dict[str, dict[str, tuple]] = {}
    refused: dict[str, str] = {}
    for name, run in (("eval", lambda: by_eval(checkpoint, data, split)),
                      ("predict", lambda: by_predict(predictor, paths)),
                      ("serve", lambda: by_serve(predictor, paths)),
                      ("onnx", lambda: by_onnx(model, paths, work)),
                      ("hf", lambda: by_hf_pipeline(model, paths, work))):
        t0 = time.perf_counter()
        out = run()
        if name == "serve":
            out, refused = out
        answers[name] = out
        seconds[name] = round(time.perf_counter() - t0, 2)
    roads = {name: {k: label for k, (label, _) in out.items()} for name, out in answers.items()}
    reference = roads["predict"]
    keys = sorted(truth)
    # how far each road's probability of predict's label strays (same label only; a flipped label is counted above)
    prob_diff = {name: max((abs(out[k][1] - answers["predict"][k][1]) for k in keys
                            if k in out and out[k][1] is not None and out[k][0] == reference.get(k)), default=None)
                 for name, out in answers.items() if name not in ("predict", "eval")}
    agreement = {name: sum(labels.get(k) == reference.get(k) for k in keys) / len(keys)
                 for name, labels in roads.items() if name != "predict"}
    top1 = {name: 100 * sum(labels.get(k) == truth[k] for k in keys) / len(keys) for name, labels in roads.items()}
    disagreements = [{"path": k, "label": truth[k], **{name: labels.get(k) for name, labels in roads.items()}}
                     for k in keys if len({labels.get(k) for labels in roads.values()}) > 1]
    return {
        "data": data, "split": split, "checkpoint": str(checkpoint), "images": len(keys),
        "preprocessing": spec.to_dict(), "agreement_with_predict": agreement, "top1": top1,
        "max_top1_prob_diff_vs_predict": prob_diff,
        "predicted_counts": {name: dict(sorted(Counter(labels.values()).items())) for name, labels in roads.items()},
        "label_counts": dict(sorted(Counter(truth.values()).items())),
        "identical_eval_predict_serve": all(roads["eval"].get(k) == reference.get(k) == roads["serve"].get(k)
                                            for k in keys),
        "disagreements": disagreements, "serve_refused": refused, "exif_not_upright": not_upright(paths),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hymenoptera"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint", help="a vitkit checkpoint trained on --data (default: train one)")
    parser.add_argument("--img-size", type=int, default=64, help="training size of the model trained here")
    parser.add_argument("--set", action="append", default=[], help="more training overrides (SECTION.KEY=VALUE)")
    parser.add_argument("--work", help="folder for the run, the exports and the cache (default: a temporary one)")
    parser.add_argument("--out", help="write the result JSON here")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} is not a folder", file=sys.stderr)
        return 0
    import os

    from _common import load

    from vitkit.runtime import machine_info

    work = Path(args.work or tempfile.mkdtemp(prefix="agreement-"))
    os.environ.setdefault("VITKIT_CACHE", str(work / "cache"))
    t0 = time.perf_counter()
    checkpoint = Path(args.checkpoint) if args.checkpoint else train_checkpoint(
        args.data, work / "runs", args.img_size, args.set)
    train_s = time.perf_counter() - t0
    result = compare(checkpoint, args.data, args.split, work)
    result.update(command="python benchmarks/preprocess_agreement.py " + " ".join(argv or sys.argv[1:]),
                  trained_here=not args.checkpoint, train_seconds=round(train_s, 1),
                  training_overrides=[*DEFAULT_TRAIN, *args.set] if not args.checkpoint else None,
                  machine=machine_info(), load_avg=load())
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(json.dumps({k: result[k] for k in ("images", "agreement_with_predict", "identical_eval_predict_serve",
                                             "top1")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

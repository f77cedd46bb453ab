"""INT8 and bf16 against fp32 on the full CIFAR-10 test set, for a ViT trained by `vitkit train` on CIFAR-10.

Top-1 accuracy, agreement with fp32, size on disk and speed (batch-1 latency p50, eval throughput) of:
eager fp32, eager bf16 (autocast), PyTorch dynamic INT8 (torch.ao), ONNX Runtime fp32 and ONNX Runtime INT8
(dynamic, per-channel weights). bf16 is evaluated on the first ``--bf16-images`` test images only: without AVX512-BF16
it is emulated and much slower than fp32 (docs/inference.md).

    python benchmarks/quantization.py CHECKPOINT [--data ../shared/data/cifar10] [--out results/quantization.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import vitkit  # noqa: E402
from vitkit.data import build_dataset, build_loader, normalize_batch  # noqa: E402
from vitkit.infer import InferenceSpec, OnnxModel, export_model, quantize_dynamic_int8, quantize_onnx_int8  # noqa: E402
from vitkit.infer.bench import percentile  # noqa: E402
from vitkit.infer.quantize import save_quantized, top1_accuracy  # noqa: E402
from vitkit.runtime import amp_context, machine_info  # noqa: E402
from vitkit.utils.fileio import atomic_write_text  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "cifar10"))
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--bf16-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quantization.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = vitkit.load_checkpoint(args.checkpoint).eval()
    spec = InferenceSpec.from_model(model)
    ds = build_dataset(args.data, "test", cache_dir=str(ROOT / ".cache" / "data"))
    if list(ds.classes) != list(spec.class_names):
        raise SystemExit(f"checkpoint classes {spec.class_names} differ from the dataset's {ds.classes}")
    batches = [(normalize_batch(x, spec.mean, spec.std), y) for x, y in build_loader(ds, args.batch_size, train=False)]
    x1 = batches[0][0][:1]

    result = {
        "command": "python benchmarks/quantization.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
        "threads": args.threads, "checkpoint": args.checkpoint, "model": model.checkpoint_meta["model_name"],
        "model_config": {k: model.config[k] for k in ("embed_dim", "depth", "num_heads", "patch_size", "img_size")},
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3), "test_images": len(ds),
        "checkpoint_training": {k: v for k, v in model.checkpoint_meta["extra"].items() if k != "class_names"},
        "paths": {},
    }
    with tempfile.TemporaryDirectory(prefix="vitkit-quant-") as tmp:
        tmp = Path(tmp)
        fp32_file = tmp / "fp32.safetensors"
        vitkit.save_checkpoint(model, fp32_file, metadata=model.checkpoint_meta["extra"])
        int8 = quantize_dynamic_int8(model)
        onnx_fp32 = export_model(model, "onnx", tmp / "fp32.onnx").path
        onnx_int8 = quantize_onnx_int8(onnx_fp32, tmp / "int8.onnx")
        bf16_model = model

        def bf16(x: torch.Tensor) -> torch.Tensor:
            with amp_context(torch.device("cpu"), "bf16"):
                return bf16_model(x).float()

        paths = {
            "eager_fp32": (model, fp32_file, batches),
            "torch_int8": (int8, save_quantized(int8, tmp / "int8.pt"), batches),
            "onnx_fp32": (OnnxModel(onnx_fp32), onnx_fp32, batches),
            "onnx_int8": (OnnxModel(onnx_int8), onnx_int8, batches),
            "eager_bf16": (bf16, fp32_file, _spread(batches, args.bf16_images)),
        }
        reference = None
        for name, (fn, file, data) in paths.items():
            with torch.inference_mode():
                t0 = time.perf_counter()
                acc = top1_accuracy(fn, data)
                elapsed = time.perf_counter() - t0
                lat = []
                for _ in range(20):
                    t = time.perf_counter()
                    fn(x1)
                    lat.append(time.perf_counter() - t)
            preds = acc.pop("predictions")
            if reference is None:
                reference = preds
            labels = torch.cat([y for _, y in data])
            same = _same_images(reference, data, batches)
            entry = {
                "top1": round(100 * acc["top1"], 2), "images": acc["n"],
                "top1_drop_vs_fp32_points": round(100 * (float((same == labels).float().mean()) - acc["top1"]), 2),
                "agreement_vs_fp32": round(float((preds == same).float().mean()), 4),
                "size_mb": round(file.stat().st_size / 1e6, 3),
                "eval_img_s": round(acc["n"] / elapsed, 1), "latency_ms_p50_b1": round(1e3 * percentile(lat, 50), 3),
            }
            if name == "eager_bf16":
                entry["size_note"] = "autocast runs the fp32 checkpoint; weights stay fp32 on disk"
            result["paths"][name] = entry
            print(f"{name:11s} top-1 {entry['top1']:6.2f}% (drop {entry['top1_drop_vs_fp32_points']:+.2f} pts, "
                  f"{entry['images']} imgs)  agree {100 * entry['agreement_vs_fp32']:.2f}%  {entry['size_mb']:7.2f} MB  "
                  f"{entry['eval_img_s']:8.1f} img/s  b1 {entry['latency_ms_p50_b1']:.2f} ms", flush=True)

        engine = _engine_check(model, int8, ds, spec)
        if engine:
            result["train_engine_evaluate_top1"] = engine
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _same_images(reference: torch.Tensor, data, batches) -> torch.Tensor:
    """fp32's predictions on exactly the images of ``data`` (a per-batch prefix of ``batches``)."""
    out, start = [], 0
    for (x, _), (full, _) in zip(data, batches):
        out.append(reference[start : start + len(x)])
        start += len(full)
    return torch.cat(out)


def _spread(batches, n):
    """About n images taken evenly from every batch (the eval order is class by class, so not just the first n)."""
    per = -(-n // len(batches))
    return [(x[:per], y[:per]) for x, y in batches]


def _engine_check(model, int8, ds, spec) -> dict | None:
    """The training engine's evaluate() (what `vitkit eval` runs) on the fp32 and the INT8 model: same numbers?"""
    try:
        from vitkit.train.evaluate import evaluate
    except ImportError:
        return None
    out = {}
    for name, m in (("eager_fp32", model), ("torch_int8", int8)):
        loader = build_loader(ds, 500, train=False)
        metrics = evaluate(m, loader, num_classes=ds.num_classes, mean=spec.mean, std=spec.std,
                           device=torch.device("cpu"))
        out[name] = round(metrics["acc1"], 2)
    return out


if __name__ == "__main__":
    raise SystemExit(main())

"""vitkit's CPU inference paths against timm and Hugging Face eager fp32: same weights, same machine, one run.

For vit_tiny/small/base_patch16_224: batch-1 latency (p50 over calls) and batch-32 throughput (median over batches,
every repetition running each path in turn) of timm eager fp32, HF ViTForImageClassification eager fp32, and the
vitkit backends of ``vitkit bench``. The batches are real CIFAR-10 test images resized to 224 by the checkpoint's
own eval transform, so the same calls give each path's top-1 agreement with eager fp32 (and its accuracy).

Weights: no pretrained weights can be downloaded here, and random-init logits are nearly tied (any INT8 noise flips
them), so each architecture is trained briefly on CIFAR-10 at 64 px (4x4 patches; ``--train-weights`` runs
``vitkit train``, ``--train-seconds`` each, into ``runs/inf-weights/<model>``) and evaluated at 224 px (the position
embedding resampled). The same weights are loaded into timm (identical keys) and HF (vitkit's verified HF export).

    python benchmarks/inference.py --train-weights --threads 2          # full run (see docs/inference.md)
    python benchmarks/inference.py --quick --models vit_tiny_patch16_224  # a ~3 minute trial
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import vitkit  # noqa: E402
from vitkit.data.decode import read_many_rgb  # noqa: E402
from vitkit.infer.bench import build_runner, percentile  # noqa: E402
from vitkit.infer.export import export_model  # noqa: E402
from vitkit.infer.preprocess import InferenceSpec  # noqa: E402
from vitkit.runtime import machine_info, native_cpu_bf16  # noqa: E402
from vitkit.utils.allocator import retain_freed_memory  # noqa: E402
from vitkit.utils.fileio import atomic_write_text  # noqa: E402

VITKIT_BACKENDS = ("eager_fp32", "compile_fp32", "compile_bf16", "onnx_fp32", "onnx_int8", "onnx_int8_static",
                   "torch_int8", "eager_bf16", "compile_int8")
QUICK_BACKENDS = "eager_fp32,onnx_fp32,onnx_int8,onnx_int8_static,torch_int8"
WEIGHTS_DIR = ROOT / "runs" / "inf-weights"
TRAIN_IMG_SIZE = 64


def cifar_root() -> Path:
    env = os.environ.get("VITKIT_CIFAR10_DIR")
    return Path(env) if env else ROOT / ".." / "shared" / "data" / "cifar10"


def cifar_images(n: int, split: str = "test") -> tuple[list[torch.Tensor], torch.Tensor]:
    """The first n/10 images of each class of ``split`` (balanced, deterministic) and their labels."""
    classes = sorted(p for p in (cifar_root() / split).iterdir() if p.is_dir())
    per_class = -(-n // len(classes))
    pairs = [(str(p), i) for i, c in enumerate(classes) for p in sorted(c.glob("*.jpg"))[:per_class]][:n]
    decoded = read_many_rgb([p for p, _ in pairs])
    keep = [(img, label) for img, (_, label) in zip(decoded, pairs) if isinstance(img, torch.Tensor)]
    return [img for img, _ in keep], torch.tensor([label for _, label in keep])


def train_command(name: str, seconds: float, threads: int) -> list[str]:
    """``vitkit train`` for ``name`` at 64 px on CIFAR-10, fp32, a fixed time budget."""
    return [
        sys.executable, "-m", "vitkit", "train", "--recipe", str(ROOT / "recipes" / "cifar10-cpu-10min.yaml"),
        "--set", f"model.name={name}", "--set", "model.kwargs={}", "--set", f"data.name={cifar_root()}",
        "--set", f"data.img_size={TRAIN_IMG_SIZE}", "--set", "data.batch_size=64", "--set", "data.val_fraction=0.02",
        "--set", "data.eval_batch_size=250", "--set", "data.size_schedule=null",
        "--set", f"train.time_budget_s={seconds}", "--set", f"train.threads={threads}",
        "--set", "schedule.warmup_steps=20", "--set", f"optim.lr={1e-3 if 'tiny' in name else 5e-4}",
        "--out-dir", str(WEIGHTS_DIR / name),
    ]


def trained_checkpoint(name: str, train: bool, seconds: float, threads: int) -> Path:
    """The newest ``best.safetensors`` under runs/inf-weights/<name>, training one first if asked to."""
    found = sorted((WEIGHTS_DIR / name).glob("*/best.safetensors"), key=lambda p: p.stat().st_mtime)
    if not found and train:
        print(f"  training {name} for {seconds:.0f} s at {TRAIN_IMG_SIZE} px", flush=True)
        subprocess.run(train_command(name, seconds, threads), check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        found = sorted((WEIGHTS_DIR / name).glob("*/best.safetensors"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no trained weights for {name} under {WEIGHTS_DIR / name}; pass --train-weights")
    return found[-1]


def build_models(name: str, checkpoint: Path, workdir: Path):
    """The trained vitkit checkpoint at 224 px -> the same weights in timm (identical keys) and in transformers."""
    import timm
    from transformers import ViTForImageClassification

    model = vitkit.load_checkpoint(checkpoint).eval()
    model.set_input_size(224)
    timm_model = timm.create_model(name, pretrained=False, num_classes=model.config["num_classes"]).eval()
    timm_model.load_state_dict(model.state_dict(), strict=True)
    report = export_model(model, "hf", workdir / "hf")  # verified against vitkit eager, max abs diff <= 1e-4
    hf = ViTForImageClassification.from_pretrained(workdir / "hf").eval()
    return timm_model, model, hf, report.max_abs_diff


def measure_interleaved(runners: dict, x1: torch.Tensor, batches: list[torch.Tensor], latency_calls: int) -> dict:
    """Round-robin timing: every repetition runs each path in turn, so load from other processes on this shared
    machine falls on all paths alike instead of on whichever happened to run during a busy minute."""
    lat = {k: [] for k in runners}
    times = {k: [] for k in runners}
    preds = {k: [] for k in runners}
    for i in range(max(latency_calls, len(batches))):
        for label, fn in runners.items():
            if i < latency_calls:
                t = time.perf_counter()
                fn(x1)
                lat[label].append(time.perf_counter() - t)
            if i < len(batches):
                t = time.perf_counter()
                out = fn(batches[i])
                times[label].append(time.perf_counter() - t)
                preds[label].append(torch.as_tensor(out).float().argmax(-1))
    return {
        label: {
            "latency_ms_p50": round(1e3 * percentile(lat[label], 50), 2),
            "latency_ms_p95": round(1e3 * percentile(lat[label], 95), 2),
            "throughput_img_s": round(batches[0].shape[0] / statistics.median(times[label]), 2),
            "batch_s": [round(t, 3) for t in times[label]], "predictions": torch.cat(preds[label]),
        }
        for label in runners
    }


def bench_model(name: str, checkpoint: Path, images: list[torch.Tensor], labels: torch.Tensor,
                calib_images: list[torch.Tensor], batch: int, latency_calls: int, backends: list[str],
                calib_method: str) -> dict:
    # every ViT's forward is one code object to dynamo: without a reset, the compiled variants of earlier models
    # (3 compiled paths x 2 batch sizes each) reach its recompile limit (8) and later models silently run eager
    torch._dynamo.reset()
    with tempfile.TemporaryDirectory(prefix="vitkit-infbench-") as tmp:
        workdir = Path(tmp)
        timm_model, model, hf, hf_diff = build_models(name, checkpoint, workdir)
        transform = InferenceSpec.from_model(model).transform()
        x = torch.stack([transform(img) for img in images])
        calibration = list(torch.stack([transform(img) for img in calib_images]).split(batch)) if calib_images else None
        batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]
        x1 = x[:1]
        with torch.inference_mode():
            parity_timm = float((timm_model(x1) - model(x1)).abs().max())
        runners = {
            "timm_eager_fp32": torch.inference_mode()(timm_model),
            "hf_eager_fp32": torch.inference_mode()(lambda t: hf(pixel_values=t).logits),
        }
        entry = {"checkpoint": str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
                 "parity_max_abs_diff": {"timm_vs_vitkit": parity_timm, "hf_vs_vitkit": hf_diff}, "paths": {}}
        setup = {}
        for backend in backends:
            t0 = time.perf_counter()
            try:
                fn = build_runner(backend, model, torch.device("cpu"), workdir, x1, calibration, calib_method)
                fn(x1)  # compilation / session creation is setup, not latency
                fn(batches[0])
            except Exception as err:  # a path that fails is reported, the others still run
                entry["paths"][f"vitkit_{backend}"] = {"error": f"{type(err).__name__}: {err}"}
                print(f"  vitkit_{backend}: error {err}", flush=True)
                continue
            runners[f"vitkit_{backend}"] = fn
            setup[f"vitkit_{backend}"] = round(time.perf_counter() - t0, 2)
        print(f"  setup done {setup}, load {os.getloadavg()}", flush=True)
        for label, result in measure_interleaved(runners, x1, batches, latency_calls).items():
            entry["paths"][label] = {"setup_s": setup.get(label, 0.0), **result}
            print(f"  {label:22s} b1 p50 {result['latency_ms_p50']:9.1f} ms  b{batch} {result['throughput_img_s']:8.2f} "
                  f"img/s", flush=True)
        reference = entry["paths"]["timm_eager_fp32"]["predictions"]
        truth = labels[: len(reference)]
        timm_thr = entry["paths"]["timm_eager_fp32"]["throughput_img_s"]
        for result in entry["paths"].values():
            if "predictions" in result:
                preds = result.pop("predictions")
                result["top1_agreement_vs_fp32"] = round(float((preds == reference).float().mean()), 4)
                result["top1_accuracy"] = round(float((preds == truth).float().mean()), 4)
                result["speedup_vs_timm_fp32"] = round(result["throughput_img_s"] / timm_thr, 2)
        good = {k: v for k, v in entry["paths"].items()
                if k.startswith("vitkit_") and v.get("top1_agreement_vs_fp32", 0) >= 0.99}
        best = max(good, key=lambda k: good[k]["throughput_img_s"]) if good else None
        entry["best_vitkit_path"] = {"path": best, **{k: good[best][k] for k in (
            "throughput_img_s", "speedup_vs_timm_fp32", "top1_agreement_vs_fp32", "latency_ms_p50")}} if best else None
        with torch.inference_mode():
            probs = torch.cat([model(b) for b in batches]).softmax(-1).topk(2).values
        entry["fp32_median_top2_margin"] = round(float((probs[:, 0] - probs[:, 1]).median()), 4)
        entry["images"] = len(batches) * batch
        entry["calibration_images"] = len(calib_images)
        return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short trial: 64 images per model, 3 latency calls, backends {QUICK_BACKENDS}")
    parser.add_argument("--images", type=int, default=256, help="real test images for throughput + agreement")
    parser.add_argument("--small-images", type=int, default=128, help="fewer for vit_small (each batch is slow here)")
    parser.add_argument("--base-images", type=int, default=64, help="fewer for vit_base")
    parser.add_argument("--calib-images", type=int, default=256, help="training images calibrating static INT8")
    parser.add_argument("--calib-method", default="minmax", help="static INT8 calibration: minmax|percentile|entropy")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--latency-calls", type=int, default=5)
    parser.add_argument("--backends", default=",".join(VITKIT_BACKENDS))
    parser.add_argument("--bf16-models", default=None,
                        help="models to run the bf16 paths on (default: all on a CPU with avx512_bf16/AMX, else only "
                             "vit_tiny: without them bf16 is many times slower than fp32)")
    parser.add_argument("--train-weights", action="store_true",
                        help=f"train missing checkpoints under {WEIGHTS_DIR.relative_to(ROOT)} with vitkit train")
    parser.add_argument("--train-seconds", type=float, default=300, help="training time budget per model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for every path (torch and onnxruntime alike)")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc keeps freed blocks for reuse (vitkit.utils.allocator) for every side alike: "
                             "the process-wide setting vitkit train uses; default: glibc's own behaviour")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    args = parser.parse_args()
    if args.quick:
        args.images = args.small_images = args.base_images = 64
        args.calib_images = min(args.calib_images, 64)
        args.latency_calls = 3
        if args.backends == ",".join(VITKIT_BACKENDS):
            args.backends = QUICK_BACKENDS

    bf16_models = (args.bf16_models.split(",") if args.bf16_models is not None
                   else args.models.split(",") if native_cpu_bf16() else ["vit_tiny_patch16_224"])
    if args.retain_freed_memory and not retain_freed_memory():
        raise SystemExit("--retain-freed-memory: this C library is not glibc, nothing to set")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    images, labels = cifar_images(max(args.images, args.small_images, args.base_images))
    calib = cifar_images(args.calib_images, "train")[0] if "onnx_int8_static" in args.backends else []
    result = {
        "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
        "batch": args.batch, "threads": args.threads,
        "images_source": "CIFAR-10 test JPEGs (32x32), resized to 224 by each checkpoint's eval transform; static INT8 "
                         f"calibrated on {len(calib)} CIFAR-10 training images ({args.calib_method})",
        "weights": f"each architecture trained by vitkit train on CIFAR-10 at {TRAIN_IMG_SIZE} px, evaluated at 224 px; "
                   "identical in timm, vitkit and HF",
        "agreement_reference": "timm eager fp32 (vitkit eager fp32 equals it)",
        "allocator": "glibc, freed memory retained for every side (retain_freed_memory)" if args.retain_freed_memory
                     else "the C library's defaults", "models": {},
    }
    for name in args.models.split(","):
        n = args.base_images if "base" in name else args.small_images if "small" in name else args.images
        backends = [b for b in args.backends.split(",") if not b.endswith("_bf16") or name in bf16_models]
        checkpoint = trained_checkpoint(name, args.train_weights, args.train_seconds, args.threads)
        print(f"{name}: {checkpoint}, {n} images, load {os.getloadavg()}", flush=True)
        result["models"][name] = bench_model(name, checkpoint, images[:n], labels[:n], calib, args.batch,
                                             args.latency_calls, backends, args.calib_method)
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")  # after each model: a long run keeps its part
    print(markdown_table(result))
    print(f"wrote {args.out}")
    return 0


def markdown_table(result: dict) -> str:
    lines = ["| model | path | b1 p50 ms | b32 img/s | x timm fp32 | top-1 agree | top-1 acc |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, entry in result["models"].items():
        for label, r in entry["paths"].items():
            if "error" in r:
                lines.append(f"| {name} | {label} | error | | | | |")
                continue
            lines.append(f"| {name} | {label} | {r['latency_ms_p50']:.1f} | {r['throughput_img_s']:.1f} | "
                         f"{r['speedup_vs_timm_fp32']:.2f} | {100 * r['top1_agreement_vs_fp32']:.1f}% | "
                         f"{100 * r['top1_accuracy']:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""vitkit's CPU inference paths against timm and Hugging Face eager fp32: same weights, same machine, one run.

For vit_tiny/small/base_patch16_224: batch-1 latency (p50 over calls) and batch-32 throughput (median over batches)
of timm eager fp32, HF ViTForImageClassification eager fp32, and every vitkit backend of ``vitkit bench``. The
batch-32 runs feed real CIFAR-10 test images resized to 224 through the model's eval transform, so the same calls
give each path's top-1 agreement with eager fp32. The weights are timm's random initialisation (no pretrained
weights can be downloaded here), copied into vitkit (timm importer) and into HF (vitkit's verified HF export).

    python benchmarks/inference.py [--models vit_tiny_patch16_224,...] [--images 256] [--out results/inference.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import vitkit  # noqa: E402
from vitkit.data.decode import read_many_rgb  # noqa: E402
from vitkit.infer.bench import build_runner, machine_info, percentile  # noqa: E402
from vitkit.infer.export import export_model  # noqa: E402
from vitkit.infer.preprocess import InferenceSpec  # noqa: E402
from vitkit.utils.fileio import atomic_write_text  # noqa: E402

VITKIT_BACKENDS = ("eager_fp32", "compile_fp32", "onnx_fp32", "onnx_int8", "torch_int8", "eager_bf16")


def cifar_images(n: int) -> list[torch.Tensor]:
    env = os.environ.get("VITKIT_CIFAR10_DIR")
    root = Path(env) if env else ROOT / ".." / "shared" / "data" / "cifar10"
    classes = sorted(p for p in (root / "test").iterdir() if p.is_dir())
    per_class = -(-n // len(classes))
    paths = [str(p) for c in classes for p in sorted(c.glob("*.jpg"))[:per_class]][:n]
    return [img for img in read_many_rgb(paths) if isinstance(img, torch.Tensor)]


def build_models(name: str, workdir: Path):
    """timm (seeded random init) -> the same weights in vitkit and in transformers."""
    import timm
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    timm_model = timm.create_model(name, pretrained=False).eval()
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(workdir / "timm.safetensors"))
    model = vitkit.create_model(name, pretrained=workdir / "timm.safetensors").eval()
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


def bench_model(name: str, images: list[torch.Tensor], batch: int, latency_calls: int, backends: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="vitkit-infbench-") as tmp:
        workdir = Path(tmp)
        timm_model, model, hf, hf_diff = build_models(name, workdir)
        transform = InferenceSpec.from_model(model).transform()
        x = torch.stack([transform(img) for img in images])
        batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]
        x1 = x[:1]
        with torch.inference_mode():
            parity_timm = float((timm_model(x1) - model(x1)).abs().max())
        runners = {
            "timm_eager_fp32": torch.inference_mode()(timm_model),
            "hf_eager_fp32": torch.inference_mode()(lambda t: hf(pixel_values=t).logits),
        }
        entry = {"parity_max_abs_diff": {"timm_vs_vitkit": parity_timm, "hf_vs_vitkit": hf_diff}, "paths": {}}
        setup = {}
        for backend in backends:
            t0 = time.perf_counter()
            try:
                fn = build_runner(backend, model, torch.device("cpu"), workdir, x1)
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
        reference = entry["paths"]["vitkit_eager_fp32"]["predictions"]
        timm_thr = entry["paths"]["timm_eager_fp32"]["throughput_img_s"]
        for result in entry["paths"].values():
            if "predictions" in result:
                preds = result.pop("predictions")
                result["top1_agreement_vs_fp32"] = round(float((preds == reference).float().mean()), 4)
                result["speedup_vs_timm_fp32"] = round(result["throughput_img_s"] / timm_thr, 2)
        good = {k: v for k, v in entry["paths"].items()
                if k.startswith("vitkit_") and v.get("top1_agreement_vs_fp32", 0) >= 0.99}
        best = max(good, key=lambda k: good[k]["throughput_img_s"])
        entry["best_vitkit_path"] = {"path": best, **{k: good[best][k] for k in (
            "throughput_img_s", "speedup_vs_timm_fp32", "top1_agreement_vs_fp32", "latency_ms_p50")}}
        entry["images"] = len(batches) * batch
        return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--images", type=int, default=128, help="real images for throughput + agreement")
    parser.add_argument("--small-images", type=int, default=64, help="fewer for vit_small (each batch is slow here)")
    parser.add_argument("--base-images", type=int, default=32, help="fewer for vit_base")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--latency-calls", type=int, default=5)
    parser.add_argument("--backends", default=",".join(VITKIT_BACKENDS))
    parser.add_argument("--bf16-models", default="vit_tiny_patch16_224",
                        help="models to run eager_bf16 on (it is ~5x slower than fp32 on CPUs without AVX512-BF16)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for every path (torch and onnxruntime alike)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    images = cifar_images(args.images)
    result = {
        "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
        "batch": args.batch, "threads": args.threads, "images_source": "CIFAR-10 test JPEGs (32x32), resized by each model's eval transform",
        "weights": "timm random init (seed 0), identical in timm, vitkit and HF", "models": {},
    }
    for name in args.models.split(","):
        n = args.base_images if "base" in name else args.small_images if "small" in name else len(images)
        backends = [b for b in args.backends.split(",") if b != "eager_bf16" or name in args.bf16_models.split(",")]
        print(f"{name}: {n} images, load {os.getloadavg()}", flush=True)
        result["models"][name] = bench_model(name, images[:n], args.batch, args.latency_calls, backends)
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")  # after each model: a long run keeps its part
    print(markdown_table(result))
    print(f"wrote {args.out}")
    return 0


def markdown_table(result: dict) -> str:
    lines = ["| model | path | b1 p50 ms | b32 img/s | x timm fp32 | top-1 agree |", "|---|---|---:|---:|---:|---:|"]
    for name, entry in result["models"].items():
        for label, r in entry["paths"].items():
            if "error" in r:
                lines.append(f"| {name} | {label} | error | | | |")
                continue
            lines.append(f"| {name} | {label} | {r['latency_ms_p50']:.1f} | {r['throughput_img_s']:.1f} | "
                         f"{r['speedup_vs_timm_fp32']:.2f} | {100 * r['top1_agreement_vs_fp32']:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""The race model's bf16 training step on this CPU with glibc's default malloc against vitkit's retained heap
(vitkit.utils.allocator.retain_freed_memory, on by default in `vitkit train` as train.retain_freed_memory).

Why: profiles of the step showed casts, copies and BatchNorm on 1-8 MiB activations running at a fraction of memory
bandwidth; the time went to page faults on freshly mmapped blocks. The setting is process-wide, so each side runs in
its own fresh process, alternating, so that drifts in this VM's speed fall on both.

    python benchmarks/cpu_allocator.py [--rounds 4] [--steps 16] [--threads 2] -> benchmarks/results/cpu_allocator.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _common import load  # noqa: E402

from vitkit.runtime import machine_info  # noqa: E402
from vitkit.train import load_config  # noqa: E402
from vitkit.utils.fileio import atomic_write_text  # noqa: E402

# one side in a fresh process: median ms per step and minor page faults per step over the timed steps
_SIDE = """
import json, resource, sys, time, torch
retain, steps, threads = sys.argv[1] == "retain", int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, {src!r})
from vitkit.utils.allocator import retain_freed_memory
if retain:
    assert retain_freed_memory(), "retain_freed_memory changed nothing (not glibc?)"
from vitkit.models import create_model
torch.set_num_threads(threads)
torch.manual_seed(0)
model = create_model("vit_hybrid_conv_tiny_32", **{kwargs!r}).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,))
def step():
    with torch.autocast("cpu", torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
for _ in range(4):
    step()
faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({{"ms_per_step": sorted(times)[len(times) // 2] * 1e3, "page_faults_per_step": faults / steps}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="fresh-process pairs (default, retain), alternating")
    ap.add_argument("--steps", type=int, default=16, help="timed steps per process, after 4 warm-up steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cpu_allocator.json"))
    args = ap.parse_args()

    kwargs = dict(load_config(ROOT / "recipes/cifar10-cpu-10min.yaml").model.kwargs, num_classes=10, img_size=32)
    code = _SIDE.format(src=str(ROOT / "src"), kwargs=kwargs)
    runs: dict[str, list[dict]] = {"default": [], "retain": []}
    load_before = load()
    for r in range(args.rounds):
        for side in runs:
            out = subprocess.run([sys.executable, "-c", code, side, str(args.steps), str(args.threads)],
                                 capture_output=True, text=True, check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {side:8s} {runs[side][-1]['ms_per_step']:7.1f} ms/step "
                  f"{runs[side][-1]['page_faults_per_step']:9.0f} page faults/step", flush=True)

    summary = {side: {"ms_per_step_median": round(statistics.median(v["ms_per_step"] for v in rs), 1),
                      "ms_per_step_rounds": [round(v["ms_per_step"], 1) for v in rs],
                      "page_faults_per_step_median": round(statistics.median(v["page_faults_per_step"] for v in rs))}
               for side, rs in runs.items()}
    speedup = summary["default"]["ms_per_step_median"] / summary["retain"]["ms_per_step_median"]
    result = {"what": "race model (recipes/cifar10-cpu-10min.yaml) bf16 autocast training step, batch 128, 32 px, "
                      "channels_last, fused AdamW; median of per-process medians",
              "model_kwargs": kwargs, "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              **summary, "speedup_retain_vs_default": round(speedup, 3),
              "machine": machine_info(), "load_before": load_before, "load_after": load(),
              "torch": __import__("torch").__version__, "command": " ".join([Path(sys.executable).name] + sys.argv)}
    print(f"retain vs default: {speedup:.3f}x")
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

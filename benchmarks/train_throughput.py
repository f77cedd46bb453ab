"""Training images/s of vitkit against timm and Hugging Face transformers, same architecture, same machine, one run.

A step is forward + cross-entropy + backward + AdamW step + zero_grad on a fixed random batch (no data loading: this
measures the model and optimizer path). Each library is used the way its own users train it:
- timm: ``timm.create_model`` + ``torch.optim.AdamW(model.parameters())`` (torch defaults);
- transformers: ``ViTForImageClassification`` (attn_implementation="sdpa") + ``torch.optim.AdamW`` (defaults);
- vitkit: ``vitkit.create_model`` + ``vitkit.optim.build_optimizer`` (its param groups, fused AdamW).
The three models hold the same weights (timm's seeded init, imported into vitkit and exported to transformers), so
the architecture is identical: same width/depth/heads/MLP, class token, patch size, classes (checked: parameter
counts and logits agree). Cells: vit_tiny_patch16_224 at 224 px and the 32 px patch-4 ViT-Ti (vit_tiny_patch4_32),
each in fp32 and bf16 autocast, eager and torch.compile (by default each transformer block, "regional compilation",
to keep a full run near 12 minutes on 2 cores; ``--compile-scope model`` compiles the whole model as ``train.compile``
does).

Timing is interleaved: after warm-up (which includes compilation), every round times one window of steps for each
library in turn, rotating the order, so a load change on a shared machine hits all sides alike; the figure is the
median window. Ratios vitkit/timm and vitkit/HF per cell, from wall time and, as a load-robust second opinion, from
the process's CPU time.

    python benchmarks/train_throughput.py [--quick] [--threads 2] [--cells 32:fp32:eager,...] [--compile-scope blocks]
    python benchmarks/train_throughput.py --profile [--quick]   # torch.profiler tables instead of timings
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import load
from torch import nn
from torch.profiler import record_function

import vitkit
from vitkit.optim import OptimConfig, build_optimizer
from vitkit.runtime import machine_info, native_cpu_bf16
from vitkit.utils.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
LIBS = ("vitkit", "timm", "hf")


@dataclass(frozen=True)
class Model:
    key: str  # the cell's size label
    vitkit_name: str
    timm_name: str
    timm_kwargs: tuple  # (name, value) pairs: timm's constructor overrides giving the same architecture
    img_size: int


MODELS = {
    "224": Model("224", "vit_tiny_patch16_224", "vit_tiny_patch16_224", (), 224),
    "32": Model("32", "vit_tiny_patch4_32", "vit_tiny_patch16_224",
                (("img_size", 32), ("patch_size", 4), ("num_classes", 10)), 32),
}
# (size, precision) -> (batch, steps per timed window). bf16 is emulated, many times slower than fp32, on a CPU
# without AVX512-BF16 (results/train_throughput_cpu.json), so its windows are short there; sized for a full run of
# about 12 minutes on 2 quiet cores. On a CPU with avx512_bf16 / AMX the bf16 cells use the fp32 batches.
FULL = {("224", "fp32"): (16, 2), ("224", "bf16"): (2, 1), ("32", "fp32"): (64, 2), ("32", "bf16"): (8, 1)}
QUICK = {("224", "fp32"): (4, 1), ("224", "bf16"): (2, 1), ("32", "fp32"): (32, 1), ("32", "bf16"): (4, 1)}
ALL_CELLS = [f"{m}:{p}:{c}" for m in MODELS for p in ("fp32", "bf16") for c in ("eager", "compile")]
QUICK_CELLS = ["32:fp32:eager", "32:bf16:eager", "224:fp32:eager", "32:fp32:compile"]


def build_models(spec: Model, workdir: Path) -> dict[str, nn.Module]:
    """timm (seeded random init) -> the same weights in vitkit (timm importer) and transformers (vitkit's HF export)."""
    import timm
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification

    from vitkit.infer.export import export_model

    torch.manual_seed(0)
    timm_model = timm.create_model(spec.timm_name, pretrained=False, **dict(spec.timm_kwargs))
    path = workdir / f"timm-{spec.key}.safetensors"
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    ours = vitkit.create_model(spec.vitkit_name, pretrained=path)
    export_model(ours, "hf", workdir / f"hf-{spec.key}")  # verified against vitkit eager, max abs diff <= 1e-4
    hf = ViTForImageClassification.from_pretrained(workdir / f"hf-{spec.key}", attn_implementation="sdpa")
    return {"vitkit": ours, "timm": timm_model, "hf": hf}


def check_identical(models: dict[str, nn.Module], size: int) -> dict:
    """Parameter counts and the largest logit difference to vitkit: evidence the three are one architecture."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = {k: logits(m.eval(), x) for k, m in models.items()}
    return {"params": {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()},
            "max_abs_logit_diff_to_vitkit": {k: float((o - out["vitkit"]).abs().max()) for k, o in out.items()
                                             if k != "vitkit"}}


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=x) if model.__class__.__name__.startswith("ViTFor") else model(x)
    return getattr(out, "logits", out)


def optimizer_for(lib: str, model: nn.Module) -> torch.optim.Optimizer:
    if lib == "vitkit":
        return build_optimizer(model, OptimConfig(), torch.device("cpu"))
    return torch.optim.AdamW(model.parameters())  # what timm's and HF's users write (torch's defaults)


PHASES = ("phase: forward + loss", "phase: backward", "phase: optimizer step")


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, precision: str, x: torch.Tensor,
              y: torch.Tensor) -> Callable[[], None]:
    """One training step; the phases are labelled for torch.profiler (a label costs microseconds when not profiling)."""
    def step() -> None:
        with record_function(PHASES[0]):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = logits(model, x)
            loss = F.cross_entropy(out.float(), y)
        with record_function(PHASES[1]):
            loss.backward()
        with record_function(PHASES[2]):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def transformer_blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """timm's and vitkit's ``blocks``; in transformers the one ModuleList (``vit.layers``, ``vit.encoder.layer`` < 5)."""
    if hasattr(model, "blocks"):
        return model.blocks
    return next(m for m in model.modules() if isinstance(m, nn.ModuleList))


def compiled(model: nn.Module, scope: str) -> nn.Module:
    """``torch.compile`` of the whole model, or of each transformer block on a copy ("regional compilation": the 12
    identical blocks share one compiled graph, so compiling costs about one block instead of the whole network)."""
    if scope == "model":
        return torch.compile(model)
    model = copy.deepcopy(model)
    for block in transformer_blocks(model):
        block.compile()
    return model


def prepare(models: dict[str, nn.Module], precision: str, compile_scope: str | None, batch: int, size: int,
            classes: int) -> dict[str, Callable[[], None]]:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    steps = {}
    for lib, model in models.items():
        model = compiled(model, compile_scope) if compile_scope else model
        model.train()
        steps[lib] = make_step(model, optimizer_for(lib, model), precision, x, y)
    return steps


def measure_cell(models: dict[str, nn.Module], size: int, classes: int, precision: str, compile_scope: str | None,
                 batch: int, window: int, rounds: int, warmup: int) -> dict:
    steps = prepare(models, precision, compile_scope, batch, size, classes)
    warm_s = {}
    for lib, step in steps.items():  # warm-up: compilation, allocator, optimizer state creation
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        warm_s[lib] = round(time.perf_counter() - t0, 2)
    rates: dict[str, list[float]] = {lib: [] for lib in steps}
    cpu_rates: dict[str, list[float]] = {lib: [] for lib in steps}
    for r in range(rounds):
        order = LIBS[r % len(LIBS):] + LIBS[: r % len(LIBS)]  # ABC, BCA, CAB: no side always runs first
        for lib in order:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(window):
                steps[lib]()
            rates[lib].append(batch * window / (time.perf_counter() - t0))
            cpu_rates[lib].append(batch * window / (time.process_time() - c0))
    med = {lib: statistics.median(v) for lib, v in rates.items()}
    cpu_med = {lib: statistics.median(v) for lib, v in cpu_rates.items()}
    return {
        "img_per_s": {lib: round(v, 2) for lib, v in med.items()},
        "img_per_s_windows": {lib: [round(v, 2) for v in rates[lib]] for lib in LIBS},
        "vitkit_over_timm": round(med["vitkit"] / med["timm"], 3),
        "vitkit_over_hf": round(med["vitkit"] / med["hf"], 3),
        # images per second of this process's CPU time (all threads): far less sensitive to other processes than
        # wall time, so a second opinion on the ratios when the machine is shared
        "img_per_cpu_s": {lib: round(v, 2) for lib, v in cpu_med.items()},
        "cpu_vitkit_over_timm": round(cpu_med["vitkit"] / cpu_med["timm"], 3),
        "cpu_vitkit_over_hf": round(cpu_med["vitkit"] / cpu_med["hf"], 3),
        "warmup_s": warm_s,
    }


def profile_cell(models: dict[str, nn.Module], size: int, classes: int, precision: str, batch: int,
                 rows: int = 14) -> str:
    """Per library, two eager steps under torch.profiler: wall time per phase (forward, backward, optimizer), the
    number of aten calls (launch overhead does not depend on machine load the way times do) and the top ops by self
    CPU time."""
    from torch.profiler import ProfilerActivity, profile

    steps = prepare(models, precision, None, batch, size, classes)
    parts = []
    for lib, step in steps.items():
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step()
        events = prof.key_averages()
        phases = {e.key: e.cpu_time_total / 2e3 for e in events if e.key in PHASES}
        aten_calls = sum(e.count for e in events if e.key.startswith("aten::")) // 2
        summary = ", ".join(f"{k.split(': ')[1]} {phases.get(k, 0):.0f} ms" for k in PHASES)
        table = events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
        parts.append(f"=== {lib}: {size} px, {precision}, batch {batch}; per step: {summary}; "
                     f"{aten_calls} aten calls ===\n{table}")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run: small batches, fewer cells")
    parser.add_argument("--cells", help=f"comma-separated size:precision:compile cells; default all of {ALL_CELLS}")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--compile-scope", choices=("blocks", "model"), default="blocks",
                        help="compile cells: each transformer block (default; compiles in about 1/12 of the time on "
                             "a CPU) or the whole model (as train.compile does; ~1-2 min per library and cell)")
    parser.add_argument("--rounds", type=int, help="timed windows per library (default 4, --quick 3)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, write torch.profiler tables of eager fp32 steps (both sizes)")
    parser.add_argument("--out", help="result path (default benchmarks/results/train_throughput.json, or "
                                      "train_throughput_profile.txt with --profile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = dict(QUICK if args.quick else FULL)
    if native_cpu_bf16():  # bf16 runs at fp32 speed or faster here: time it at the same batches
        sizes.update({(key, "bf16"): sizes[(key, "fp32")] for key in MODELS})
    cells = args.cells.split(",") if args.cells else (QUICK_CELLS if args.quick else ALL_CELLS)
    bad = [c for c in cells if c not in ALL_CELLS]
    if bad:
        sys.exit(f"unknown cells {bad}; choose from {ALL_CELLS}")
    rounds = args.rounds or (3 if args.quick else 4)
    import timm
    import transformers

    with tempfile.TemporaryDirectory(prefix="vitkit-trainbench-") as tmp:
        built = {}
        for key in dict.fromkeys(c.split(":")[0] for c in cells):
            built[key] = build_models(MODELS[key], Path(tmp))

        if args.profile:
            text = "\n".join(profile_cell(built[k], MODELS[k].img_size, 1000 if k == "224" else 10, "fp32",
                                          sizes[(k, "fp32")][0]) for k in built)
            out = Path(args.out or REPO / "benchmarks" / "results" / "train_throughput_profile.txt")
            atomic_write_text(out, f"# python benchmarks/train_throughput.py {' '.join(sys.argv[1:])}\n"
                                   f"# torch {torch.__version__}, threads {args.threads}, load {load()}\n{text}\n")
            print(text)
            print(f"saved {out}")
            return

        result = {
            "benchmark": "train_throughput",
            "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(), "threads": args.threads,
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__,
                         "vitkit": vitkit.__version__},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": load(),
            "method": "training step = forward + cross-entropy + backward + AdamW step + zero_grad on one fixed random "
                      "batch; after warm-up, rounds of one timed window per library in rotating order; median window",
            "optimizers": {"vitkit": "vitkit.optim.build_optimizer(OptimConfig()): fused AdamW, no decay on "
                                     "norms/biases/embeddings", "timm": "torch.optim.AdamW(model.parameters())",
                           "hf": "torch.optim.AdamW(model.parameters())"},
            "quick": args.quick, "rounds": rounds, "compile_scope": args.compile_scope, "architecture_check": {}, "cells": [],
        }
        for key, models in built.items():
            result["architecture_check"][key] = check_identical(models, MODELS[key].img_size)
        for cell in cells:
            key, precision, mode = cell.split(":")
            batch, window = sizes[(key, precision)]
            before = load()
            t0 = time.perf_counter()
            row = {"cell": cell, "model": MODELS[key].vitkit_name, "img_size": MODELS[key].img_size,
                   "precision": precision, "compile": mode == "compile", "batch": batch, "steps_per_window": window}
            row.update(measure_cell(built[key], MODELS[key].img_size, 1000 if key == "224" else 10, precision,
                                    args.compile_scope if mode == "compile" else None, batch, window, rounds,
                                    warmup=2))
            row.update(wall_s=round(time.perf_counter() - t0, 1), loadavg_before=before, loadavg_after=load())
            print(json.dumps({k: row[k] for k in ("cell", "batch", "img_per_s", "vitkit_over_timm", "vitkit_over_hf",
                                                  "cpu_vitkit_over_timm", "wall_s")}), flush=True)
            result["cells"].append(row)
    result["loadavg_end"] = load()
    if max(result["loadavg_start"] + result["loadavg_end"]) > result["machine"]["cores"]:
        result["load_note"] = "load average above the core count: other processes shared the CPU"
    out = Path(args.out or REPO / "benchmarks" / "results" / "train_throughput.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()

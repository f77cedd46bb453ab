"""`vitkit serve` under load: a real async HTTP client (httpx) against the service on 127.0.0.1, beside a plain
FastAPI baseline that serves the same checkpoint one request per forward pass (decode, transform, batch of one,
in Starlette's thread pool: what a first deployment usually looks like).

Scenarios, each bounded by a request count and a time limit, run against both servers in turn:

  small-c1, small-c16, small-c64   valid small images (64-160 px JPEGs and PNGs) at concurrency 1, 16 and 64
  malformed-c16                     20% malformed requests mixed in: garbage bytes, a truncated JPEG, a wrong content
                                    type, a bad ``topk``, an oversized body, an empty body
  flood-c16                         a share of huge images (4000x4000 PNG, 6000x4000 JPEG, 6000x6000 PNG) among the
                                    small ones; small and flood requests are timed apart, to show whom a flood slows

For each: requests/s, p50/p99 latency (all requests, and the small valid ones alone), status counts, and the
server's RSS before, at its peak (psutil on the server pid, sampled every 20 ms) and 2 s after. Goals: no 5xx from
vitkit, its RSS growth over idle within ``RSS_GROWTH_BOUND_MIB``, and >= 2.5x the baseline's requests/s at
concurrency 16. Beside them, the model's forward alone at batch 1 and at the service's largest batch: the ratio of
their per-image costs (``batching_ceiling``) is the most that micro-batching can buy on the machine. Only 127.0.0.1 is
ever addressed.

    python benchmarks/serve_load.py                 # full run (quiet machine) -> benchmarks/results/serve_load.json
    python benchmarks/serve_load.py --quick         # a smoke run: few requests, results/serve_load_quick.json
"""

# No `from __future__ import annotations`: FastAPI reads the baseline handler's annotations at run time, and
# `Request` is imported inside baseline_app, where a string annotation could not be resolved.
import argparse
import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _common import load  # noqa: E402

DEFAULT_MODEL = "vit_tiny_patch16_224"
NUM_CLASSES = 10
# The service's RSS may grow over its idle value by at most this much under any scenario: its batches, the small
# decodes in flight and a few large decodes (ServeConfig.large_decodes, half the cores) at a time.
RSS_GROWTH_BOUND_MIB = 1024
SPEEDUP_GOAL = 2.5


# --- the baseline server ----------------------------------------------------------------------------------------------


def baseline_app(checkpoint: str):
    """The same checkpoint behind the simplest FastAPI handler: every request decodes and runs its own forward."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from vitkit.data.decode import BadImageError, decode_rgb
    from vitkit.infer.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    app = FastAPI()

    def classify(data: bytes, topk: int) -> list:
        image = predictor.transform(decode_rgb(data, "upload"))
        probs = predictor.probabilities(image.unsqueeze(0))
        return [{"label": lab, "prob": round(p, 6)} for lab, p in predictor.topk(probs, topk)[0]]

    @app.post("/predict")
    async def predict(request: Request):
        topk = int(request.query_params.get("topk", 5))
        data = await request.body()
        try:
            return {"predictions": await run_in_threadpool(classify, data, topk)}
        except BadImageError as err:
            return JSONResponse({"error": err.reason}, status_code=400)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


def run_baseline_server(checkpoint: str, port: int) -> None:
    import uvicorn

    from vitkit.utils.allocator import retain_for_inference

    retain_for_inference()  # as `vitkit serve` does, so the two RSS figures compare like with like
    uvicorn.run(baseline_app(checkpoint), host="127.0.0.1", port=port, log_level="warning")


# --- payloads ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    kind: str  # "small", "malformed" or "flood"
    name: str
    body: bytes
    content_type: str
    query: str = ""


def _encode(image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def make_payloads(seed: int) -> dict[str, list[Payload]]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = []
    for i, side in enumerate((64, 96, 128, 160) * 4):
        pixels = rng.integers(0, 256, (side, side * 3 // 4 if i % 2 else side, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        small.append(Payload("small", f"{fmt.lower()}{side}", _encode(image, fmt), f"image/{fmt.lower()}"))
    valid = small[0].body
    malformed = [
        Payload("malformed", "garbage", b"this is not an image" * 20, "image/jpeg"),
        Payload("malformed", "truncated-jpeg", valid[: len(valid) // 3], "image/jpeg"),
        Payload("malformed", "text-plain", b"hello", "text/plain"),
        Payload("malformed", "topk-superscript", valid, "image/jpeg", "topk=%C2%B2"),
        Payload("malformed", "topk-zero", valid, "image/jpeg", "topk=0"),
        Payload("malformed", "oversized", b"\xff\xd8" + b"\x00" * (11 * 1024 * 1024), "image/jpeg"),
        Payload("malformed", "empty", b"", "image/png"),
    ]
    flood = [
        Payload("flood", "png4000x4000", _encode(Image.new("RGB", (4000, 4000), (40, 90, 200)), "PNG"), "image/png"),
        Payload("flood", "jpeg6000x4000", _encode(Image.new("RGB", (6000, 4000), (200, 90, 40)), "JPEG"),
                "image/jpeg"),
        Payload("flood", "png6000x6000", _encode(Image.new("RGB", (6000, 6000), (90, 200, 40)), "PNG"), "image/png"),
    ]
    return {"small": small, "malformed": malformed, "flood": flood}


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    requests: int
    bad_share: float = 0.0  # of malformed requests
    flood_share: float = 0.0  # of huge images


def scenarios(quick: bool, flood_share: float) -> list[Scenario]:
    def count(full: int, smoke: int) -> int:
        return smoke if quick else full

    return [
        Scenario("small-c1", 1, count(300, 20)),
        Scenario("small-c16", 16, count(2000, 64)),
        Scenario("small-c64", 64, count(2000, 128)),
        Scenario("malformed-c16", 16, count(1000, 64), bad_share=0.2),
        Scenario("flood-c16", 16, count(400, 48), flood_share=flood_share),
    ]


def request_plan(scenario: Scenario, payloads: dict[str, list[Payload]], seed: int) -> list[Payload]:
    rng = random.Random(f"{seed}-{scenario.name}")
    plan = []
    for _ in range(scenario.requests):
        u = rng.random()
        kind = "malformed" if u < scenario.bad_share else "flood" if u < scenario.bad_share + scenario.flood_share \
            else "small"
        plan.append(rng.choice(payloads[kind]))
    return plan


# --- the client -------------------------------------------------------------------------------------------------------


class RssWatch:
    """The server's resident memory, sampled in a thread every 20 ms between start() and stop()."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        return self.process.memory_info().rss

    def cpu_s(self) -> float:
        """CPU seconds the server has used (user + system, its threads included): a cost per request that other
        processes on the machine disturb far less than wall time."""
        times = self.process.cpu_times()
        return times.user + times.system

    def start(self) -> int:
        before = self.rss()
        self.peak = before
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return before

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def drive(base: str, plan: list[Payload], concurrency: int, max_seconds: float) -> tuple[list, float]:
    """Send ``plan`` with ``concurrency`` requests in flight; returns (kind, name, status, seconds) per request and the
    wall time. Requests not started by ``max_seconds`` are not sent."""
    import httpx

    results: list[tuple[str, str, str, float]] = []
    position = 0
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal position
        while position < len(plan) and time.perf_counter() < deadline:
            payload = plan[position]
            position += 1
            url = f"{base}/predict" + (f"?{payload.query}" if payload.query else "")
            t0 = time.perf_counter()
            try:
                response = await client.post(url, content=payload.body, headers={"Content-Type": payload.content_type})
                status = str(response.status_code)
            except httpx.HTTPError as err:
                status = f"error:{type(err).__name__}"
            results.append((payload.kind, payload.name, status, time.perf_counter() - t0))

    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return results, time.perf_counter() - t0


def summarise(results: list, wall_s: float) -> dict:
    latencies = [r[3] for r in results]
    small_ok = [r[3] for r in results if r[0] == "small" and r[2] == "200"]
    flood = [r[3] for r in results if r[0] == "flood"]
    statuses = Counter(r[2] for r in results)

    def ms(values: list[float], q: float) -> float | None:
        value = _percentile(values, q)
        return None if value is None else round(value * 1e3, 2)

    return {
        "requests": len(results), "wall_s": round(wall_s, 3), "req_per_s": round(len(results) / wall_s, 2),
        "p50_ms": ms(latencies, 50), "p99_ms": ms(latencies, 99),
        "small_ok_p50_ms": ms(small_ok, 50), "small_ok_p99_ms": ms(small_ok, 99),
        "flood_p50_ms": ms(flood, 50), "flood_p99_ms": ms(flood, 99),
        "status_counts": dict(sorted(statuses.items())),
        "status_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "client_errors": sum(n for s, n in statuses.items() if s.startswith("error")),
        "by_payload": {name: dict(sorted(Counter(r[2] for r in results if r[1] == name).items()))
                       for name in sorted({r[1] for r in results if r[0] != "small"})},
    }


# --- servers ----------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], port: int, log_path: Path) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError("server did not come up within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_target(name: str, command: list[str], port: int, plans: list[tuple[Scenario, list[Payload]]],
               max_seconds: float, workdir: Path) -> dict:
    log_path = workdir / f"{name}.log"
    proc = start_server(command, port, log_path)
    base = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        watch = RssWatch(proc.pid)
        warm = [p for _, plan in plans for p in plan if p.kind == "small"][:32]
        asyncio.run(drive(base, warm, 4, 60))
        out["rss_idle_mib"] = round(watch.rss() / 2**20, 1)
        for scenario, plan in plans:
            before, cpu0 = watch.start(), watch.cpu_s()
            results, wall_s = asyncio.run(drive(base, plan, scenario.concurrency, max_seconds))
            peak, cpu_s = watch.stop(), watch.cpu_s() - cpu0
            time.sleep(2.0)
            after = watch.rss()
            row = summarise(results, wall_s)
            row.update(concurrency=scenario.concurrency, server_cpu_ms_per_request=round(cpu_s / len(results) * 1e3, 2),
                       rss_before_mib=round(before / 2**20, 1),
                       rss_peak_mib=round(peak / 2**20, 1), rss_after_mib=round(after / 2**20, 1))
            out[scenario.name] = row
            print(f"{name:9s} {scenario.name:14s} {row['req_per_s']:8.1f} req/s  "
                  f"cpu {row['server_cpu_ms_per_request']} ms/req  p50 {row['p50_ms']} ms  "
                  f"p99 {row['p99_ms']} ms  small p99 {row['small_ok_p99_ms']} ms  5xx {row['status_5xx']}  "
                  f"RSS {row['rss_before_mib']}/{row['rss_peak_mib']}/{row['rss_after_mib']} MiB  "
                  f"{row['status_counts']}", flush=True)
    finally:
        stop_server(proc)
    log_text = log_path.read_text(errors="replace")
    out["server_log_tracebacks"] = log_text.count("Traceback")
    return out


def forward_cost(checkpoint: str, batch: int, reps: int) -> dict:
    """The served model's forward alone, ms per image at batch 1 and at the service's largest batch, in this process
    with torch's default threads (as both servers run): what micro-batching can buy at most is their ratio."""
    import torch

    from vitkit.infer.predict import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    size = predictor.spec.img_size
    out = {"threads": torch.get_num_threads(), "max_batch": batch}
    for n in (1, batch):
        x = torch.randn(n, 3, *size)
        predictor.probabilities(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            predictor.probabilities(x)
        out[f"ms_per_image_batch{n}"] = round((time.perf_counter() - t0) / reps / n * 1e3, 2)
    out["batching_ceiling"] = round(out["ms_per_image_batch1"] / out[f"ms_per_image_batch{batch}"], 2)
    return out


def make_checkpoint(model_name: str, path: Path, seed: int) -> Path:
    import torch

    import vitkit

    torch.manual_seed(seed)
    model = vitkit.create_model(model_name, num_classes=NUM_CLASSES)
    return vitkit.save_checkpoint(model, path, metadata={"class_names": [f"class_{i}" for i in range(NUM_CLASSES)]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registered model served by both (random weights)")
    parser.add_argument("--quick", action="store_true", help="a smoke run with few requests")
    parser.add_argument("--flood-share", type=float, default=0.25, help="share of huge images in flood-c16")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time limit of each scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default="vitkit,baseline")
    parser.add_argument("--scenarios", help="comma-separated subset (default: all): small-c1,small-c16,...")
    parser.add_argument("--out", help="default: benchmarks/results/serve_load.json (serve_load_quick.json if --quick)")
    parser.add_argument("--baseline-server", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server, args.port)
        return 0

    from vitkit.runtime import machine_info
    from vitkit.utils.fileio import atomic_write_text

    out_path = Path(args.out or ROOT / "benchmarks" / "results" / f"serve_load{'_quick' if args.quick else ''}.json")
    payloads = make_payloads(args.seed)
    chosen = scenarios(args.quick, args.flood_share)
    if args.scenarios:
        names = args.scenarios.split(",")
        unknown = sorted(set(names) - {s.name for s in chosen})
        if unknown:
            raise SystemExit(f"error: unknown scenario(s) {', '.join(unknown)}")
        chosen = [s for s in chosen if s.name in names]
    plans = [(s, request_plan(s, payloads, args.seed)) for s in chosen]
    load_start = load()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ckpt = str(make_checkpoint(args.model, workdir / "model.safetensors", args.seed))
        from vitkit.infer.serve import ServeConfig

        forward = forward_cost(ckpt, ServeConfig().max_batch, reps=3 if args.quick else 10)
        print(f"forward alone: {forward}", flush=True)
        targets = {}
        for target in args.targets.split(","):
            port = _free_port()
            if target == "vitkit":
                command = [sys.executable, "-m", "vitkit", "serve", ckpt, "--port", str(port), "--log-level",
                           "warning"]
            elif target == "baseline":
                command = [sys.executable, str(Path(__file__).resolve()), "--baseline-server", ckpt,
                           "--port", str(port)]
            else:
                raise SystemExit(f"error: unknown target {target!r} (vitkit, baseline)")
            targets[target] = run_target(target, command, port, plans, args.max_seconds, workdir)

    result: dict = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "load_start": load_start,
        "load_end": load(),
        "model": args.model,
        "scenarios": {s.name: {"concurrency": s.concurrency, "requests": s.requests, "bad_share": s.bad_share,
                               "flood_share": s.flood_share} for s, _ in plans},
        "payloads": {kind: {p.name: len(p.body) for p in items} for kind, items in payloads.items()},
        "rss_growth_bound_mib": RSS_GROWTH_BOUND_MIB,
        "model_forward": forward,
        "targets": targets,
    }
    if "vitkit" in targets:
        service = targets["vitkit"]
        rows = [row for key, row in service.items() if isinstance(row, dict)]
        result["goals"] = {
            "vitkit_5xx": sum(row["status_5xx"] for row in rows),
            "vitkit_rss_growth_mib": round(max(row["rss_peak_mib"] for row in rows) - service["rss_idle_mib"], 1),
        }
        result["goals"]["rss_within_bound"] = result["goals"]["vitkit_rss_growth_mib"] <= RSS_GROWTH_BOUND_MIB
        if "baseline" in targets and "small-c16" in service:
            speedup = service["small-c16"]["req_per_s"] / targets["baseline"]["small-c16"]["req_per_s"]
            result["goals"].update(speedup_c16=round(speedup, 2), speedup_goal=SPEEDUP_GOAL,
                                   speedup_met=speedup >= SPEEDUP_GOAL,
                                   batching_ceiling=forward["batching_ceiling"])
        print(json.dumps(result["goals"]))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

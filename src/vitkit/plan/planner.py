"""`vitkit plan`: will this configuration fit, on which card, how to make it fit, and how long will it take.

Time on a GPU comes from timing.py's per-kernel model (fitted on published measurements); on a CPU host, or when
the user knows it, from a given throughput.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..models.contract import VitkitModel
from .flops import (
    ViTShape,
    closed_form_problem,
    closed_form_shape_of,
    count_params,
    counted_flops,
    vit_flops,
)
from .gpus import ACCELERATORS, Accelerator, get_accelerator, overhead_bytes
from .memory import MemoryEstimate, estimate_memory
from .timing import FITTED, StepTime, TimeConstants, step_kernels, step_time
from .traced import TracedShape, trace_shape, traced_memory

STRATEGIES = ("single", "ddp", "fsdp")


@dataclass(frozen=True)
class PlanRequest:
    model: str
    img_size: int | None = None
    batch: int = 32  # global batch per optimizer step: devices x accum x micro-batch
    mode: str = "train"
    precision: str = "bf16"
    optimizer: str = "adamw"
    grad_checkpointing: bool = False
    accum: int = 1
    devices: int = 1
    strategy: str = "single"
    token_keep_rate: float = 1.0
    gpu: str | None = None
    dataset_size: int = 1_281_167  # ImageNet-1k train
    epochs: float = 1.0
    num_classes: int | None = None  # None: the model's
    throughput: float | None = None  # img/s, if known (overrides the time model)
    fused_attention: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("batch", "accum", "devices", "dataset_size", "epochs", "num_classes", "img_size", "throughput"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {value}")

    @property
    def micro_batch(self) -> int:
        per_step = self.devices * self.accum
        if self.batch % per_step:
            raise ValueError(f"batch {self.batch} is not divisible by devices x accum = {self.devices} x {self.accum}")
        return self.batch // per_step


@dataclass
class AcceleratorFit:
    name: str
    memory_gib: float
    needed_gib: float
    fits: bool
    max_micro_batch: int  # largest micro-batch that fits with the requested techniques (0: not even 1)
    suggestion: str  # cheapest change that makes it fit, if it does not
    suggestion_gib: float | None
    epoch_hours: float | None
    total_hours: float | None = None  # epochs x epoch_hours
    images_per_second: float | None = None
    step_seconds: float | None = None  # one optimizer step of the global batch (accumulation included)
    bound: str | None = None  # what takes most of a step: compute, memory, overhead; "given" for --throughput


@dataclass
class Plan:
    request: dict[str, Any]
    params: int
    flops_forward_per_image: int
    flops_train_per_image: int
    flops_forward_counted: int  # torch.utils.flop_counter on the meta device, the cross-check
    flops_breakdown: dict[str, int]
    memory: MemoryEstimate
    accelerators: list[AcceleratorFit]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory"] = self.memory.as_dict()
        return d


# Architectures without a closed form, planned from a traced run on the meta device (traced.py).
TRACED_ARCHS = ("levit", "crossvit")


def _meta_model(req: PlanRequest) -> VitkitModel:
    from ..models.registry import create_model

    overrides = dict(req.overrides)
    if req.img_size is not None:
        overrides["img_size"] = req.img_size
    if req.num_classes is not None:
        overrides["num_classes"] = req.num_classes
    with torch.device("meta"):
        return create_model(req.model, **overrides)


def runs_fused_attention(device_type: str, precision: str) -> bool:
    """Whether vitkit's attention runs a fused kernel (no (B, H, N, N) matrix kept) on this device type in this
    precision: everywhere except bf16 on a CPU, where it is two bf16 matmuls (``layers.scaled_dot_product_attention``)."""
    from ..models.layers import runs_explicit_attention

    return not (precision == "bf16" and runs_explicit_attention(device_type, torch.bfloat16))


def _shape(req: PlanRequest, model: VitkitModel | None = None) -> tuple[ViTShape, int, VitkitModel]:
    model = _meta_model(req) if model is None else model
    problem = closed_form_problem(model)
    if problem is not None:
        raise ValueError(f"the planner models the plain ViT and DeiT in closed form and {', '.join(TRACED_ARCHS)} "
                         f"from a traced run, and does not model {req.model!r}: {problem}")
    return closed_form_shape_of(model, token_keep_rate=req.token_keep_rate), count_params(model), model


def closed_form_shape(req: PlanRequest) -> tuple[ViTShape, int]:
    """The ViT / DeiT structure the closed forms read (DeiT's distillation token included), and its parameters."""
    shape, params, _ = _shape(req)
    return shape, params


def _memory(req: PlanRequest, shape: ViTShape, params: int, micro_batch: int | None = None, **changes) -> MemoryEstimate:
    r = replace(req, **changes) if changes else req
    if r.strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {r.strategy!r}")
    shard = r.devices if r.strategy == "fsdp" else 1
    return estimate_memory(
        shape, micro_batch if micro_batch is not None else r.micro_batch, r.mode, r.precision, r.optimizer,
        r.grad_checkpointing, r.fused_attention, num_params=params, shard_factor=shard,
        grads_resident=r.strategy == "ddp" and r.devices > 1,
    )


def _needed(acc: Accelerator, est: MemoryEstimate) -> int:
    return est.peak + overhead_bytes(acc, est.peak)


def largest_batch(fits: Callable[[int], bool]) -> int:
    """Largest micro-batch for which ``fits`` holds (memory grows monotonically with batch, so bisect); 0 if none."""
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= 1 << 16 and fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _max_micro_batch(req: PlanRequest, shape: ViTShape, params: int, acc: Accelerator, **changes) -> int:
    return largest_batch(lambda b: _needed(acc, _memory(req, shape, params, b, **changes)) <= acc.memory_bytes)


def _low_precision(acc: Accelerator) -> str:
    return "bf16" if acc.bf16_tflops is not None else "fp16"


def _cheapest_fit(req: PlanRequest, shape: ViTShape, params: int, acc: Accelerator) -> tuple[str, float | None]:
    """Try changes from cheapest to dearest: lower precision, accumulation, checkpointing, then FSDP over devices.

    Each candidate keeps the global batch; its cost is (devices needed, relative step time).
    """
    candidates = []
    precisions = [req.precision] if req.mode == "infer" or req.precision != "fp32" else ["fp32", _low_precision(acc)]
    for precision in precisions:
        for ckpt in ([req.grad_checkpointing] if req.grad_checkpointing else [False, True]):
            for devices, strategy in ([(req.devices, req.strategy)] + [(d, "fsdp") for d in (2, 4, 8) if d > req.devices]):
                accum = req.accum
                while accum <= req.batch:
                    if req.batch % (devices * accum) == 0:
                        speed = acc.peak_tflops(precision) / acc.peak_tflops(req.precision) if acc.cuda else 1.0
                        cost = (1.33 if ckpt and req.mode == "train" else 1.0) * (1 + 0.03 * math.log2(accum)) / speed
                        candidates.append((devices, cost, precision, ckpt, accum, strategy))
                    accum *= 2
    for devices, _, precision, ckpt, accum, strategy in sorted(candidates):
        changes = dict(precision=precision, grad_checkpointing=ckpt, accum=accum, devices=devices, strategy=strategy)
        est = _memory(req, shape, params, req.batch // (devices * accum), **changes)
        need = _needed(acc, est)
        if need <= acc.memory_bytes:
            parts = []
            if precision != req.precision:
                parts.append(f"{precision} autocast")
            if ckpt and not req.grad_checkpointing:
                parts.append("gradient checkpointing")
            if accum != req.accum:
                parts.append(f"accumulation x{accum} (micro-batch {req.batch // (devices * accum)})")
            if devices != req.devices:
                parts.append(f"FSDP over {devices} devices")
            return " + ".join(parts) or "fits as requested", need / 2**30
    return "does not fit even with bf16, checkpointing, micro-batch 1 and FSDP over 8", None


def predict_step(req: PlanRequest, acc: Accelerator, shape: ViTShape, params: int,
                 constants: TimeConstants = FITTED) -> StepTime:
    """One optimizer step of the global batch on each of ``req.devices`` cards: ``accum`` micro-batch steps, each
    timed by timing.py's kernel model (gradient communication across devices is not modelled)."""
    kernels = step_kernels(shape, req.micro_batch, req.mode, req.precision, req.fused_attention, req.optimizer,
                           params, req.grad_checkpointing and req.mode == "train")
    micro = step_time(kernels, acc, req.precision, req.micro_batch, constants)
    seconds = micro.seconds * req.accum
    return replace(micro, seconds=seconds, compute_seconds=micro.compute_seconds * req.accum,
                   memory_seconds=micro.memory_seconds * req.accum, overhead_seconds=micro.overhead_seconds * req.accum,
                   images_per_second=req.batch / seconds)


def predicted_device_step(req: PlanRequest, acc: Accelerator) -> StepTime:
    """One device's step at the request's micro-batch (what ``--measure`` runs), predicted on ``acc``."""
    one = replace(req, batch=req.micro_batch, accum=1, devices=1, strategy="single")
    shape, params = closed_form_shape(one)
    return predict_step(one, acc, shape, params)


def _timed(fit: AcceleratorFit, req: PlanRequest, step: Callable[[], StepTime | None]) -> AcceleratorFit:
    """Fill a fit's time columns: from a given throughput, else from ``step`` (None: nothing to time it on)."""
    if req.throughput:
        fit.images_per_second, fit.step_seconds, fit.bound = req.throughput, req.batch / req.throughput, "given"
    else:
        timed = step()
        if timed is None:
            return fit
        fit.images_per_second, fit.step_seconds, fit.bound = timed.images_per_second, timed.seconds, timed.bound
    fit.epoch_hours = req.dataset_size / fit.images_per_second / 3600
    fit.total_hours = fit.epoch_hours * req.epochs
    return fit


def plan(req: PlanRequest, accelerators: list[str] | None = None) -> Plan:
    model = _meta_model(req)
    if model.arch in TRACED_ARCHS:
        return _traced_plan(req, model, accelerators)
    shape, params, meta_model = _shape(req, model)
    training = req.mode == "train"
    fwd = vit_flops(shape, "infer")
    train = vit_flops(shape, "train", req.grad_checkpointing, req.fused_attention) if training else fwd
    counted = counted_flops(meta_model, (shape.in_chans, *shape.img_size), 1, "infer")
    est = _memory(req, shape, params)

    names = accelerators or ([req.gpu] if req.gpu else list(ACCELERATORS))
    fits = []
    for name in names:
        acc = get_accelerator(name)
        acc_req = req
        note = ""
        if req.precision == "bf16" and acc.bf16_tflops is None:  # e.g. T4: same memory, fp16 + GradScaler
            acc_req, note = replace(req, precision="fp16"), " (fp16: the card has no bf16)"
        need = _needed(acc, est)
        ok = need <= acc.memory_bytes
        if ok:
            suggestion, suggestion_gib = "fits as requested" + note, need / 2**30
        else:
            suggestion, suggestion_gib = _cheapest_fit(acc_req, shape, params, acc)
            suggestion += note
        fit = AcceleratorFit(
            name=acc.name, memory_gib=acc.memory_bytes / 2**30, needed_gib=need / 2**30, fits=ok,
            max_micro_batch=_max_micro_batch(req, shape, params, acc), suggestion=suggestion,
            suggestion_gib=suggestion_gib, epoch_hours=None,
        )
        fits.append(_timed(fit, acc_req, lambda acc=acc, r=acc_req: predict_step(r, acc, shape, params)
                           if acc.cuda else None))
    return Plan(
        request=asdict(req), params=params, flops_forward_per_image=fwd["total"],
        flops_train_per_image=train["total"], flops_forward_counted=counted, flops_breakdown=train,
        memory=est, accelerators=fits,
    )


def _traced_plan(req: PlanRequest, model: VitkitModel, accelerators: list[str] | None) -> Plan:
    """The plan of an architecture without a closed form: counted FLOPs, traced memory (see traced.py)."""
    if req.grad_checkpointing or req.strategy == "fsdp" or req.token_keep_rate < 1.0:
        raise ValueError(f"{req.model!r} is planned from a traced run, which models neither gradient checkpointing, "
                         "FSDP nor token dropout; plan it without them (or measure with --measure)")
    shape: TracedShape = trace_shape(req.model, model, req.precision)
    training = req.mode == "train"
    est = traced_memory(shape, req.micro_batch, req.mode, req.precision, req.optimizer)
    flops = shape.flops_train if training else shape.flops_forward
    fits = []
    for name in accelerators or ([req.gpu] if req.gpu else list(ACCELERATORS)):
        acc = get_accelerator(name)
        acc_req, note = req, ""
        if req.precision == "bf16" and acc.bf16_tflops is None:  # same memory in fp16 + GradScaler
            acc_req, note = replace(req, precision="fp16"), " (fp16: the card has no bf16)"
        need = _needed(acc, est)
        largest = largest_batch(lambda b, acc=acc: _needed(acc, traced_memory(
            shape, b, req.mode, req.precision, req.optimizer)) <= acc.memory_bytes)
        suggestion, suggestion_gib = "fits as requested" + note, need / 2**30
        if need > acc.memory_bytes:
            accum = next((a for a in range(req.accum, req.batch + 1) if req.batch % (req.devices * a) == 0
                          and req.batch // (req.devices * a) <= largest), None)
            if largest and accum:
                micro = req.batch // (req.devices * accum)
                suggestion = f"accumulation x{accum} (micro-batch {micro})"
                suggestion_gib = _needed(acc, traced_memory(shape, micro, req.mode, req.precision, req.optimizer)) / 2**30
            else:
                suggestion, suggestion_gib = "does not fit even at micro-batch 1 (traced plan: no FSDP modelled)", None
        fit = AcceleratorFit(
            name=acc.name, memory_gib=acc.memory_bytes / 2**30, needed_gib=need / 2**30,
            fits=need <= acc.memory_bytes, max_micro_batch=largest, suggestion=suggestion,
            suggestion_gib=suggestion_gib, epoch_hours=None,
        )
        # no kernel list without a closed form, and FLOPs alone miss these models' memory-bound convolutions and
        # norms by an order of magnitude: only a given throughput times them
        fits.append(_timed(fit, acc_req, lambda: None))
    return Plan(
        request=asdict(req), params=shape.params, flops_forward_per_image=shape.flops_forward,
        flops_train_per_image=shape.flops_train if training else shape.flops_forward,
        flops_forward_counted=shape.flops_forward, flops_breakdown={"counted": flops, "total": flops},
        memory=est, accelerators=fits,
    )


def format_plan(p: Plan) -> str:
    r = p.request
    gib = 2**30
    m = p.memory
    lines = [
        f"{r['model']}  img {r['img_size'] or 'default'}  batch {r['batch']} (micro-batch "
        f"{r['batch'] // (r['devices'] * r['accum'])}, accum {r['accum']}, {r['devices']} device(s), {r['strategy']})  "
        f"{r['mode']} {r['precision']} {r['optimizer'] if r['mode'] == 'train' else ''}"
        f"{' +checkpointing' if r['grad_checkpointing'] else ''}"
        f"{'' if r.get('fused_attention', True) else '  explicit (N x N) attention'}",
        f"parameters            {p.params / 1e6:10.2f} M",
        f"GFLOPs / image        {p.flops_forward_per_image / 1e9:10.3f} forward (torch flop_counter: "
        f"{p.flops_forward_counted / 1e9:.3f})",
    ]
    if r["mode"] == "train":
        lines.append(f"                      {p.flops_train_per_image / 1e9:10.3f} training step (forward + backward"
                     f"{' + recompute' if r['grad_checkpointing'] else ''})")
    lines.append("memory per device (GiB)")
    for label, value in [
        ("weights", m.weights), ("gradients", m.gradients), ("optimizer states", m.optimizer_states),
        ("optimizer temporaries", m.optimizer_temporaries), ("autocast weight copies", m.weight_copies),
        ("activations", m.activations), ("attention workspace", m.attention_workspace),
        ("backward transients", m.transient), ("input batch", m.inputs),
    ]:
        lines.append(f"  {label:22s} {value / gib:10.3f}")
    lines.append(f"  {'peak (tensors)':22s} {m.peak / gib:10.3f}   at {m.peak_phase}")
    lines.append("")
    epochs = r.get("epochs", 1.0)
    total = epochs != 1
    lines.append(f"{'accelerator':15s} {'memory':>7s} {'needs':>7s} {'fits':>5s} {'max micro':>9s} {'img/s':>9s} "
                 f"{'step (s)':>9s} {'bound':>8s} {'epoch (h)':>9s}" + (f" {f'{epochs:g} ep (h)':>10s}" if total else "")
                 + "  how to make it fit")
    for a in p.accelerators:
        timed = a.images_per_second is not None
        cells = [f"{a.images_per_second:9.1f}", f"{a.step_seconds:9.3f}", f"{a.bound:>8s}", f"{a.epoch_hours:9.2f}"] \
            if timed else [f"{'-':>9s}", f"{'-':>9s}", f"{'-':>8s}", f"{'-':>9s}"]
        if total:
            cells.append(f"{a.total_hours:10.1f}" if timed else f"{'-':>10s}")
        how = "" if a.fits else a.suggestion + (f" -> {a.suggestion_gib:.1f} GiB" if a.suggestion_gib else "")
        lines.append(f"{a.name:15s} {a.memory_gib:7.1f} {a.needed_gib:7.2f} {'yes' if a.fits else 'no':>5s} "
                     f"{a.max_micro_batch:9d} " + " ".join(cells) + f"  {how}")
    lines.append("needs = tensor peak (+ 0.5 GiB CUDA context + 8% allocator overhead on GPUs)")
    if r["throughput"]:
        lines.append(f"time from the given throughput, {r['throughput']:g} img/s, over {r['dataset_size']:,} "
                     "images per epoch")
    else:
        lines.append(f"time over {r['dataset_size']:,} images per epoch, predicted (not measured) by a per-kernel "
                     "roofline model fitted on timm's published RTX 3090 / 4090 tables (docs/planner.md); "
                     "one device's step, no gradient communication; CPU hosts and LeViT / CrossViT: give --throughput")
    return "\n".join(lines)

"""Predicted against measured: run a planned configuration on this machine and compare it with the plan.

`vitkit plan --measure` builds the planned model, times one steady-state step with :func:`measure.measure_step` and
reports the plan's error on peak memory and FLOPs; on a CUDA device it also compares the step time with the time
model's prediction for that card (``gpu``, else the accelerator table's match of the device's name).
"""

from __future__ import annotations

from dataclasses import dataclass

from .measure import Measurement, measure_step
from .planner import Plan, PlanRequest, predicted_device_step


@dataclass
class MeasuredComparison:
    """One measured step of a planned configuration beside the plan's figures; errors are (predicted - measured) /
    measured. The step-time fields are set on CUDA devices only, and only if the card is in the table."""

    device: str
    micro_batch: int
    dataset_size: int
    measurement: Measurement
    predicted_peak_bytes: int
    predicted_flops: int
    predicted_on: str | None = None
    predicted_step_seconds: float | None = None
    predicted_bound: str | None = None

    @property
    def memory_error(self) -> float:
        return (self.predicted_peak_bytes - self.measurement.peak_bytes) / self.measurement.peak_bytes

    @property
    def flops_error(self) -> float | None:
        flops = self.measurement.flops
        return (self.predicted_flops - flops) / flops if flops else None

    @property
    def step_time_error(self) -> float | None:
        measured = self.measurement.step_seconds
        if self.predicted_step_seconds is None or not measured:
            return None
        return (self.predicted_step_seconds - measured) / measured

    def as_dict(self) -> dict:
        """The measurement's fields, the device and the errors (``vitkit plan --measure --json``'s "measured")."""
        out = self.measurement.as_dict() | {
            "device": self.device, "memory_error": self.memory_error, "flops_error": self.flops_error,
        }
        if self.device.startswith("cuda"):
            out |= {"predicted_on": self.predicted_on, "predicted_step_seconds": self.predicted_step_seconds}
            if self.predicted_step_seconds is not None:
                out |= {"predicted_bound": self.predicted_bound, "step_time_error": self.step_time_error}
        return out

    def describe(self) -> str:
        m = self.measurement
        lines = [
            f"measured on {self.device} (micro-batch {self.micro_batch}, one steady-state step):",
            f"  peak memory  predicted {self.predicted_peak_bytes / 2**30:8.3f} GiB  measured "
            f"{m.peak_bytes / 2**30:8.3f} GiB  error {100 * self.memory_error:+.1f}%",
            f"  FLOPs/step   predicted {self.predicted_flops / 1e9:8.1f} G    measured {m.flops / 1e9:8.1f} G"
            f"    error {100 * (self.flops_error or 0):+.2f}%",
        ]
        if self.predicted_step_seconds:
            lines.append(f"  step time    predicted {self.predicted_step_seconds:8.4f} s    measured "
                         f"{m.step_seconds:8.4f} s    error {100 * self.step_time_error:+.1f}%  "
                         f"({self.predicted_on}, {self.predicted_bound}-bound)")
        rate = self.micro_batch / m.step_seconds
        lines.append(f"  step time    {m.step_seconds:.3f} s  ->  {rate:.1f} img/s here, an epoch of "
                     f"{self.dataset_size:,} images in {self.dataset_size / rate / 3600:.2f} h")
        return "\n".join(lines)


def compare_with_measurement(req: PlanRequest, result: Plan, device: str, gpu: str | None = None
                             ) -> MeasuredComparison:
    """Build ``req``'s model, measure one step of its micro-batch on ``device`` and set it beside ``result``
    (the plan of ``req``). ``gpu``: the accelerator whose predicted step time a CUDA measurement is compared with."""
    from ..models.registry import create_model

    overrides = dict(req.overrides)  # the model the plan describes, with real weights
    if req.img_size:
        overrides["img_size"] = req.img_size
    if req.num_classes:
        overrides["num_classes"] = req.num_classes
    if req.token_keep_rate < 1.0:
        overrides["token_keep_rate"] = req.token_keep_rate
    model = create_model(req.model, **overrides)
    measurement = measure_step(model, req.micro_batch, req.mode, req.precision, req.optimizer, req.grad_checkpointing,
                               device=device)
    comparison = MeasuredComparison(
        device=device, micro_batch=req.micro_batch, dataset_size=req.dataset_size, measurement=measurement,
        predicted_peak_bytes=result.memory.peak, predicted_flops=result.flops_train_per_image * req.micro_batch,
    )
    if device.startswith("cuda"):
        _predict_cuda_step(comparison, req, gpu)
    return comparison


def _predict_cuda_step(comparison: MeasuredComparison, req: PlanRequest, gpu: str | None) -> None:
    """The time model's step on the card the measurement ran on (``gpu``, else the table's match of its name)."""
    import torch

    from .gpus import accelerator_for_device, get_accelerator

    props = torch.cuda.get_device_properties(torch.device(comparison.device))
    acc = get_accelerator(gpu) if gpu else accelerator_for_device(props.name, props.total_memory)
    if acc is None or not acc.cuda:
        return
    step = predicted_device_step(req, acc)
    comparison.predicted_on, comparison.predicted_step_seconds, comparison.predicted_bound = (
        acc.name, step.seconds, step.bound)


__all__ = ["MeasuredComparison", "compare_with_measurement"]

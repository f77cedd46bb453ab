"""Knowledge distillation (Hinton et al. 2015; DeiT's hard variant, Touvron et al. 2021) as a loss, for THE loop.

``train.distill`` turns it on: a frozen teacher sees the same augmented batch as the student, and the loss becomes
``(1 - alpha) * CE(student, labels) + alpha * KD`` where KD is
- ``soft``: KL(softmax(teacher / T) || softmax(student / T)) * T^2 (T^2 keeps the gradient scale independent of T),
- ``hard``: cross-entropy against the teacher's argmax (DeiT's choice, reported better than soft for ViTs).
A DeiT student sends the labels to its class head and the teacher to its distillation head.

The teacher is a vitkit checkpoint (``.safetensors`` written by vitkit) or a torchvision classifier
``torchvision:<name>`` with local weights (``teacher_weights``, a state dict; nothing is downloaded). It runs in eval
mode, without gradients, cast to the run's precision (bf16/fp16 halve its memory), and is never wrapped by DDP: each
process distils its own shard, so it works unchanged under torchrun.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.contract import VitkitModel
from ..runtime import precision_dtype
from .config import DistillConfig


def load_teacher(cfg: DistillConfig, num_classes: int) -> tuple[nn.Module, tuple | None, tuple | None]:
    """The teacher module and its normalisation (mean, std), or (None, None) for 'same as the student'."""
    mean, std = cfg.teacher_mean, cfg.teacher_std
    if cfg.teacher.startswith("torchvision:"):
        import torchvision

        name = cfg.teacher.split(":", 1)[1]
        if name not in torchvision.models.list_models():
            raise ValueError(f"unknown torchvision model {name!r} for train.distill.teacher")
        teacher = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        path = Path(cfg.teacher_weights)
        if not path.is_file():
            raise FileNotFoundError(f"train.distill.teacher_weights not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = teacher.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} does not fit torchvision {name} with {num_classes} classes: missing {missing}, "
                             f"unexpected {unexpected}")
    else:
        from ..weights import load_checkpoint, read_checkpoint_metadata

        teacher = load_checkpoint(cfg.teacher)
        extra = read_checkpoint_metadata(cfg.teacher)["extra"]
        if mean is None and "mean" in extra:
            mean, std = tuple(extra["mean"]), tuple(extra["std"])
    if isinstance(teacher, VitkitModel):
        out_classes = teacher.num_classes
    else:  # a torchvision classifier: the ResNet family's head is .fc
        out_classes = getattr(getattr(teacher, "fc", None), "out_features", None)
    if out_classes is not None and out_classes != num_classes:
        raise ValueError(f"teacher {cfg.teacher} predicts {out_classes} classes, the data has {num_classes}")
    return teacher, mean, std


class Distiller(nn.Module):
    """Called in the loop as ``logits, loss = distiller(x, student_output, targets)``.

    ``student_output`` is a tensor, or (class logits, distillation logits) from a DeiT in distilled training; the
    returned logits (for accuracy) are then their mean, as the model predicts at inference.
    """

    def __init__(self, cfg: DistillConfig, teacher: nn.Module, criterion: nn.Module, precision: str = "fp32",
                 student_norm: tuple | None = None, teacher_norm: tuple | None = None):
        super().__init__()
        self.cfg = cfg
        self.criterion = criterion
        self.dtype = precision_dtype(precision)
        self.teacher = teacher.to(self.dtype).eval().requires_grad_(False)
        self.renorm = teacher_norm is not None and teacher_norm[0] is not None and student_norm is not None \
            and tuple(map(tuple, teacher_norm)) != tuple(map(tuple, student_norm))
        if self.renorm:  # x_teacher = (x * std_s + mean_s - mean_t) / std_t: one scale and shift per channel
            (ms, ss), (mt, st) = ([torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in norm]
                                  for norm in (student_norm, teacher_norm))
            self.register_buffer("scale", ss / st, persistent=False)
            self.register_buffer("shift", (ms - mt) / st, persistent=False)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # the teacher always predicts, never trains (dropout, batch-norm statistics)
        return self

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.renorm:
            x = x * self.scale + self.shift
        return self.teacher(x.to(self.dtype)).float()

    def forward(self, x: torch.Tensor, output, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(output, tuple):
            cls_logits, kd_logits = output
            logits = (cls_logits + kd_logits) / 2
        else:
            cls_logits = kd_logits = logits = output
        base = self.criterion(cls_logits.float(), targets)
        teacher = self.teacher_logits(x)
        kd_logits = kd_logits.float()
        if self.cfg.kind == "soft":
            t = float(self.cfg.temperature)
            kd = F.kl_div(F.log_softmax(kd_logits / t, dim=1), F.log_softmax(teacher / t, dim=1),
                          reduction="batchmean", log_target=True) * (t * t)
        else:
            kd = F.cross_entropy(kd_logits, teacher.argmax(dim=1))
        alpha = float(self.cfg.alpha)
        return logits, (1 - alpha) * base + alpha * kd


def build_distiller(cfg: DistillConfig, num_classes: int, criterion: nn.Module, precision: str,
                    device: torch.device, mean, std) -> Distiller:
    """The teacher loaded and wrapped for the loop, for a student normalised with (mean, std)."""
    teacher, t_mean, t_std = load_teacher(cfg, num_classes)
    return Distiller(cfg, teacher, criterion, precision, (tuple(mean), tuple(std)), (t_mean, t_std)).to(device)


__all__ = ["DistillConfig", "Distiller", "build_distiller", "load_teacher"]

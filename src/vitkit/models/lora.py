"""LoRA adapters (Hu et al. 2021) on any vitkit model, through Hugging Face ``peft``.

peft works on vitkit modules as they are: its LoRA layers wrap the ``nn.Linear`` projections found by name (the
attention's ``qkv`` and ``proj``, the MLP's ``fc1`` and ``fc2``; the same names in every vitkit architecture), so
nothing here re-implements LoRA. What this module adds is vitkit's defaults and the three steps of a fine-tune:
``add_lora`` (freeze the base, train adapters + the new head), ``save_adapters`` / ``load_adapters`` (only the
adapters are written, a few hundred KB, atomically), ``merge_lora`` (fold them into the base weights: a plain vitkit
model again, for ``save_checkpoint`` and ONNX export). ``vitkit.plan.lora.lora_memory`` gives the planner's numbers
for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

DEFAULT_TARGETS = ("qkv", "proj", "fc1", "fc2")


def _target_regex(targets: Sequence[str]) -> str:
    """Only the transformer blocks' projections: 'proj' must not catch patch_embed.proj (a convolution)."""
    return r".*blocks\.\d+\.(attn|mlp)\.(" + "|".join(targets) + ")"


def add_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = DEFAULT_TARGETS,
    train_head: bool = True,
):
    """Wrap ``model`` in a peft ``PeftModel`` with LoRA on the blocks' ``targets``; everything else is frozen.

    train_head: the classifier head (``head``, and DeiT's ``head_dist``) is trained in full and saved with the
    adapters, the usual choice when fine-tuning to a new label set.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    unknown = sorted(set(targets) - names)
    if unknown:
        raise ValueError(f"LoRA targets {unknown} name no nn.Linear of {type(model).__name__}; "
                         f"its linear layers end in: {', '.join(sorted(names))}")
    heads = [n for n in ("head", "head_dist") if isinstance(getattr(model, n, None), nn.Linear)] if train_head else []
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=_target_regex(targets),
                        modules_to_save=heads or None)
    return get_peft_model(model, config)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_adapters(peft_model, path: str | os.PathLike) -> Path:
    """Write only the adapters (and a trained head) as peft's folder (adapter_model.safetensors + config), atomically:
    written beside ``path`` and renamed into place, so a killed process leaves the previous folder intact."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        peft_model.save_pretrained(str(tmp))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def load_adapters(model: nn.Module, path: str | os.PathLike, trainable: bool = False):
    """Attach adapters saved by ``save_adapters`` to a freshly built base model (same architecture)."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path} holds no LoRA adapters (adapter_config.json missing)")
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)


def merge_lora(peft_model) -> nn.Module:
    """Fold the adapters into the base weights (W + B A * alpha / r) and return the plain vitkit model."""
    return peft_model.merge_and_unload()


def lora_parameter_count(model: nn.Module, rank: int, targets: Sequence[str] = DEFAULT_TARGETS,
                         train_head: bool = True) -> int:
    """Trainable parameters LoRA adds (rank x (in + out) per targeted linear) plus the head, without building it."""
    import re

    pattern = re.compile(_target_regex(targets))
    count = sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
                if isinstance(m, nn.Linear) and pattern.fullmatch(name))
    if train_head:
        count += sum(p.numel() for n in ("head", "head_dist") if isinstance(getattr(model, n, None), nn.Linear)
                     for p in getattr(model, n).parameters())
    return count


__all__ = ["DEFAULT_TARGETS", "add_lora", "save_adapters", "load_adapters", "merge_lora", "trainable_parameters",
           "lora_parameter_count"]

"""The typed training configuration: sections of dataclasses, read from YAML recipes and ``--set key=value`` overrides.

Every key is checked before anything is built, so a typo or a bad value fails in a second with a message that names
the key and what it accepts, instead of an hour into a run. ``Config()`` itself is the embedded default: a small ViT
on scikit-learn digits that trains on a CPU in about a minute.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..optim import OptimConfig
from ..utils.errors import ConfigError, require


@dataclass
class ModelConfig:
    name: str = "vit_digits_patch2_8"
    pretrained: str | None = None  # local weights: vitkit .safetensors, timm/HF/npz files (see vitkit.create_model)
    drop_path_rate: float | None = None  # None keeps the registry's value
    drop_rate: float | None = None
    token_keep_rate: float = 1.0  # token dropout (FLIP/NaViT): fraction of patch tokens kept while training
    kwargs: dict[str, Any] = field(default_factory=dict)  # any other constructor argument of the architecture

    def validate(self) -> None:
        require(0.0 < self.token_keep_rate <= 1.0, "model.token_keep_rate", "must be in (0, 1]", self.token_keep_rate)
        for key in ("drop_path_rate", "drop_rate"):
            value = getattr(self, key)
            require(value is None or 0.0 <= value < 1.0, f"model.{key}", "must be in [0, 1)", value)
        reserved = {"num_classes", "in_chans", "img_size", "drop_path_rate", "drop_rate", "token_keep_rate"}
        clash = sorted(reserved & set(self.kwargs))
        require(not clash, "model.kwargs", f"must not set {clash}: they come from the data or have their own key", clash)
        if self.kwargs:
            self._check_kwargs_against_architecture()

    def _check_kwargs_against_architecture(self) -> None:
        """An argument the architecture does not take, or a size it cannot build (depth 0), fails here, before any
        data is decoded. A name the registry does not know is left to the model's builder, which resolves it."""
        from ..models.registry import ModelArgumentError, UnknownModelError, check_model_arguments

        try:
            check_model_arguments(self.name, self.kwargs)
        except UnknownModelError:
            return
        except ModelArgumentError as err:
            raise ConfigError(f"model.kwargs: {err}") from None


@dataclass
class DataConfig:
    name: str = "digits"  # digits | synthetic | cifar10 | cifar100 | an image folder: <root>/<class>/<img>, or
    # <root>/train/ with val/ (validation) and test/ beside it
    root: str | None = None  # for cifar10/cifar100: the folder holding the python batches
    kwargs: dict[str, Any] = field(default_factory=dict)  # options of the dataset kind, e.g. synthetic num_samples
    img_size: int | None = None  # the training size; None: the dataset's own size (photos: 224). The model is
    # built for it; photos are stored with the short side at img_size / crop_pct, CIFAR-sized data at img_size
    storage_size: int | None = None  # image folders: the side stored in the cache, instead of the rule above
    augment: Literal["auto", "photo", "small"] = "auto"  # batch pipeline: photo = RandomResizedCrop (scale_min..1)
    # + flip, and val/test resized + center-cropped by crop_pct; small = pad-crop (crop_padding) + flip on the whole
    # image; auto = photo for image folders of photos, small for CIFAR-sized images (short side <= 64) and arrays
    batch_size: int = 32  # images per forward pass across all processes; effective batch = this x accum_steps
    eval_batch_size: int | None = None  # None: 2 x batch_size
    val_fraction: float = 0.1  # carved (seeded, stratified) from train for datasets without a val split
    num_workers: int | None = None
    cache_dir: str | None = None
    pipeline: Literal["batch", "per_sample"] = "batch"  # batch: cached uint8 batches + BatchAugment on the device
    # (small images); per_sample: torchvision v2 transforms per image in DataLoader workers (large images)
    scale_min: float = 0.08  # RandomResizedCrop area range (scale_min, 1): per_sample, and augment=photo
    auto_augment: Literal["randaugment", "trivialaugment", "autoaugment", "autoaugment-cifar10"] | None = None
    randaugment_num_ops: int = 2  # auto_augment=randaugment: operations per image (the N of RandAugment(N, M))
    randaugment_magnitude: int = 9  # auto_augment=randaugment: strength M, 0..30 (torchvision's 31 bins)
    random_erasing: float = 0.0  # per_sample: RandomErasing probability
    crop_pct: float = 0.875  # evaluation of photos: resize to size / crop_pct, then centre-crop
    crop_padding: int = 0  # random-crop padding in pixels; 0 = off (on 8x8 digits a 1-pixel shift costs ~6 points)
    flip: bool | None = None  # horizontal flip; None: by the data (on for photos; off otherwise: digits are not
    # mirror-symmetric)
    eval_hflip_tta: bool = False  # validation and test: average the logits of each image and its mirror image
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    # progressive resolution: [[fraction, size], ...], the training image size from each fraction of the run on
    # (of the steps, or of train.time_budget_s); e.g. [[0, 16], [0.4, 24], [0.7, 32]]. The model keeps its position
    # embedding at its own size and resamples it for each batch (FlexiViT-style); evaluation runs at the model's size
    size_schedule: list[tuple[float, int]] | None = None
    size_schedule_batch: Literal["constant", "scale"] = "constant"  # scale: while images are smaller, join
    # (native / size)^2 loader batches (at most 4) into one step, keeping the device full; needs accum_steps=1

    def validate(self) -> None:
        require(self.batch_size >= 1, "data.batch_size", "must be >= 1", self.batch_size)
        require(self.eval_batch_size is None or self.eval_batch_size >= 1, "data.eval_batch_size", "must be >= 1",
                 self.eval_batch_size)
        require(self.img_size is None or self.img_size >= 1, "data.img_size", "must be >= 1", self.img_size)
        require(self.storage_size is None or self.storage_size >= 1, "data.storage_size", "must be >= 1 or null",
                 self.storage_size)
        require(0.0 <= self.val_fraction < 1.0, "data.val_fraction", "must be in [0, 1)", self.val_fraction)
        require(self.crop_padding >= 0, "data.crop_padding", "must be >= 0", self.crop_padding)
        require(0.0 < self.scale_min <= 1.0, "data.scale_min", "must be in (0, 1]", self.scale_min)
        require(0.0 < self.crop_pct <= 1.0, "data.crop_pct", "must be in (0, 1]", self.crop_pct)
        require(0.0 <= self.random_erasing <= 1.0, "data.random_erasing", "must be in [0, 1]", self.random_erasing)
        require(self.randaugment_num_ops >= 1, "data.randaugment_num_ops", "must be >= 1", self.randaugment_num_ops)
        require(0 <= self.randaugment_magnitude <= 30, "data.randaugment_magnitude", "must be in [0, 30]",
                 self.randaugment_magnitude)
        if self.pipeline == "batch":
            for key, off in (("auto_augment", None), ("random_erasing", 0.0)):
                require(getattr(self, key) == off, f"data.{key}", "needs data.pipeline=per_sample",
                         getattr(self, key))
        for key in ("mixup_alpha", "cutmix_alpha"):
            require(getattr(self, key) >= 0.0, f"data.{key}", "must be >= 0", getattr(self, key))
        for key in ("mix_prob", "switch_prob"):
            require(0.0 <= getattr(self, key) <= 1.0, f"data.{key}", "must be in [0, 1]", getattr(self, key))
        if self.size_schedule is not None:
            sched = self.size_schedule
            require(len(sched) >= 1 and sched[0][0] == 0.0, "data.size_schedule",
                     "must be a list of [fraction, size] starting at fraction 0", sched)
            fractions = [f for f, _ in sched]
            require(fractions == sorted(set(fractions)) and fractions[-1] < 1.0, "data.size_schedule",
                     "fractions must increase and stay below 1", sched)
            require(all(size >= 1 for _, size in sched), "data.size_schedule", "sizes must be >= 1", sched)


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "constant", "step"] = "cosine"
    warmup_epochs: float = 2.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of the peak lr
    step_epochs: float = 30.0  # step schedule: multiply the lr by gamma every this many epochs
    gamma: float = 0.1

    def validate(self) -> None:
        require(self.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0", self.warmup_epochs)
        require(self.warmup_steps is None or self.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0",
                 self.warmup_steps)
        require(0.0 <= self.min_lr_ratio <= 1.0, "schedule.min_lr_ratio", "must be in [0, 1]", self.min_lr_ratio)
        require(self.step_epochs > 0, "schedule.step_epochs", "must be > 0", self.step_epochs)
        require(0.0 < self.gamma <= 1.0, "schedule.gamma", "must be in (0, 1]", self.gamma)


@dataclass
class DistillConfig:
    """``train.distill``: knowledge distillation (vitkit/train/distill.py), off while ``teacher`` is empty.

    A recipe sets it as a mapping (``train.distill: {teacher: ..., kind: hard}``: the keys given, the rest their
    defaults; ``{}`` or null switches it off) or key by key (``--set train.distill.alpha=0.5``).
    """

    teacher: str | None = None  # a vitkit .safetensors checkpoint, or "torchvision:<model name>" (torchvision:resnet18)
    teacher_weights: str | None = None  # torchvision teacher: a local state dict (.pth / .safetensors)
    kind: Literal["soft", "hard"] = "soft"  # soft: KL at temperature T; hard: CE on the teacher's argmax (DeiT)
    alpha: float = 0.5  # weight of the distillation term; 1 - alpha goes to the labels
    temperature: float = 1.0  # soft distillation only
    teacher_mean: tuple[float, ...] | None = None  # the teacher's input normalisation; None: a vitkit checkpoint's
    teacher_std: tuple[float, ...] | None = None  # own, else the student's (then no renormalisation)

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None, key: str = "train.distill") -> DistillConfig:
        """The section from a recipe's mapping; unknown keys and a mapping without a teacher are errors."""
        mapping = {} if mapping is None else mapping
        if not isinstance(mapping, dict):
            raise ConfigError(f"{key}: expected a mapping of its keys ({', '.join(_fields_of(cls))}), got {mapping!r}")
        if mapping and not mapping.get("teacher"):
            raise ConfigError(f"{key} needs a teacher: a vitkit .safetensors path or torchvision:<name>")
        cfg = cls()
        for name, value in mapping.items():
            cfg.set(name, value, key)
        return cfg

    def set(self, name: str, value: Any, key: str = "train.distill") -> None:
        """Set one key, checking the name and the type."""
        fields = _fields_of(type(self))
        if name not in fields:
            raise ConfigError(f"unknown key {key}.{name!s}; keys of [{key}]: {', '.join(fields)}")
        setattr(self, name, _coerce(value, fields[name], f"{key}.{name}"))

    def to_dict(self) -> dict[str, Any]:
        """The recipe mapping: every key while on, ``{}`` while off."""
        return _plain(dataclasses.asdict(self)) if self.enabled else {}

    def validate(self) -> None:
        if not self.enabled:
            require(self == DistillConfig(), "train.distill", "needs a teacher: a vitkit .safetensors path or "
                "torchvision:<name>", dataclasses.asdict(self))
            return
        require(0.0 <= self.alpha <= 1.0, "train.distill.alpha", "must be in [0, 1]", self.alpha)
        require(self.temperature > 0, "train.distill.temperature", "must be > 0", self.temperature)
        require(not self.teacher.startswith("torchvision:") or bool(self.teacher_weights), "train.distill.teacher_weights",
            f"must name a local state dict for teacher={self.teacher!r} (vitkit never downloads weights)",
            self.teacher_weights)
        require((self.teacher_mean is None) == (self.teacher_std is None), "train.distill.teacher_mean",
            "and teacher_std go together; set both or neither", self.teacher_mean)


@dataclass
class TrainConfig:
    epochs: int = 40
    max_steps: int | None = None  # stop after this many optimizer steps in total (a time budget); None = epochs
    time_budget_s: float | None = None  # stop after this many seconds of training (first step to last, evaluations
    # included); the cosine schedule and data.size_schedule then follow the elapsed fraction of the budget
    accum_steps: int = 1  # gradient accumulation: forward passes per optimizer step
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # bf16/fp16 = autocast; fp16 (CUDA only) uses
    # GradScaler; auto = the fast one for the device: CUDA bf16 (fp16 before Ampere), CPU bf16 only with avx512_bf16 /
    # AMX, else fp32 (bf16 is emulated there, many times slower: docs/training.md)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # NHWC conv weights and inputs: oneDNN's native layout, so a conv stem skips
    # layout reorders (the race's conv-stem hybrid: benchmarks/results/bf16_train_step.json)
    grad_checkpointing: bool = False  # recompute block activations in backward (less memory, one more forward)
    label_smoothing: float = 0.1
    ema: bool = False  # keep an exponential moving average of the weights, evaluated and saved beside them
    ema_decay: float = 0.999
    early_stop_patience: int | None = None  # epochs without improvement of checkpoint.metric before stopping
    early_stop_min_delta: float = 0.0
    auto_batch: bool = False  # find the largest micro-batch that fits and keep the effective batch via accumulation
    cpu_batch_cap: int = 256  # auto_batch on a CPU: the largest micro-batch tried (memory cannot be probed safely)
    eval_every: int = 1  # epochs between validations
    seed: int = 0
    deterministic: bool = False  # deterministic kernels: bitwise-reproducible runs and resumes
    threads: int | None = None  # torch.set_num_threads; null keeps what torch picks for the machine. 1 for tiny
    # models on a shared machine: intra-op threads buy nothing at width 64 and collapse when other processes share
    # the cores (docs/training.md)
    retain_freed_memory: bool = True  # glibc keeps freed blocks for reuse instead of new zeroed pages each step:
    # faster CPU steps (vitkit.utils.allocator; benchmarks/results/cpu_allocator.json)
    distill: DistillConfig = field(default_factory=DistillConfig)  # knowledge distillation; off without a teacher

    def validate(self) -> None:
        for key in ("epochs", "accum_steps", "cpu_batch_cap", "eval_every"):
            require(getattr(self, key) >= 1, f"train.{key}", "must be >= 1", getattr(self, key))
        for key in ("max_steps", "early_stop_patience", "threads"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"train.{key}", "must be >= 1 or null", value)
        require(self.time_budget_s is None or self.time_budget_s > 0, "train.time_budget_s", "must be > 0 or null",
                 self.time_budget_s)
        require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)", self.label_smoothing)
        require(0.0 < self.ema_decay < 1.0, "train.ema_decay", "must be in (0, 1)", self.ema_decay)
        require(self.early_stop_min_delta >= 0, "train.early_stop_min_delta", "must be >= 0",
                 self.early_stop_min_delta)
        self.distill.validate()


@dataclass
class CheckpointConfig:
    out_dir: str = "runs"
    run_name: str | None = None  # None: the model name; the run directory is <out_dir>/<run_name>-<timestamp>
    metric: Literal["val_acc1", "val_loss"] = "val_acc1"  # decides best.safetensors and early stopping
    every_steps: int | None = None  # also save last.pt every this many optimizer steps (mid-epoch); None = per epoch
    keep_last: int = 0  # keep this many per-epoch copies of last.pt (history); 0 = only last.pt
    resume: str | None = None  # a last.pt path, a run directory, or "auto" (the newest run of this run_name)

    def validate(self) -> None:
        require(self.every_steps is None or self.every_steps >= 1, "checkpoint.every_steps", "must be >= 1 or null",
                 self.every_steps)
        require(self.keep_last >= 0, "checkpoint.keep_last", "must be >= 0", self.keep_last)


@dataclass
class LogConfig:
    every_steps: int = 10  # metrics.jsonl / TensorBoard / plain-progress line every this many optimizer steps
    block_grad_every: int = 100  # per-block gradient-norm summary every this many optimizer steps; 0 = off
    progress: Literal["auto", "bar", "plain", "none"] = "auto"  # auto: a bar on a terminal, plain lines otherwise
    tensorboard: bool = True
    curves: bool = True  # curves.png at the end
    report: bool = True  # report.html at the end: curves, confusion matrix, predictions, attention (vitkit.viz)

    def validate(self) -> None:
        require(self.every_steps >= 1, "log.every_steps", "must be >= 1", self.every_steps)
        require(self.block_grad_every >= 0, "log.block_grad_every", "must be >= 0", self.block_grad_every)


@dataclass
class DistConfig:
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # under torchrun: auto = ddp; fsdp = FSDP2 fully_shard
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on CPU


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def validate(self) -> Config:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):  # a section whose types say it all (dist) has no validate
                section.validate()
        if self.data.size_schedule_batch == "scale" and (self.train.accum_steps != 1 or not self.data.size_schedule):
            raise ConfigError("data.size_schedule_batch='scale' needs data.size_schedule and train.accum_steps=1 "
                              f"(got accum_steps={self.train.accum_steps}, size_schedule={self.data.size_schedule})")
        if self.train.precision == "fp16" and self.train.device == "cpu":
            raise ConfigError("train.precision='fp16' needs CUDA (fp16 autocast on a CPU is very slow); use 'bf16'")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = _plain(dataclasses.asdict(self))
        out["train"]["distill"] = self.train.distill.to_dict()
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def _plain(obj: Any) -> Any:
    """Tuples -> lists so YAML stays plain (safe_load can read it back)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --- values: YAML text -> the field's declared type ------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return "a list of numbers" if args[-1] is Ellipsis else f"a list of {len(args)} numbers"
    if origin is list:
        return f"a list of ({_type_name(typing.get_args(tp)[0])})"
    if origin is dict:
        return "a mapping"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` or a ConfigError naming ``key`` and what it accepts. Ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_coerce(v, typing.get_args(tp)[0], key) for v in value]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # YAML's .inf / .nan: no setting means anything by them
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return number
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _fields_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section_fields(section: str) -> dict[str, Any]:
    return _fields_of(typing.get_type_hints(Config)[section])


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` (or ``model.kwargs.<arg>``, ``train.distill.<key>``) from a parsed value, checking the
    key and the type."""
    parts = dotted.split(".")
    section = parts[0]
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r} in {dotted!r}; sections: {', '.join(SECTIONS)}")
    fields = _section_fields(section)
    if len(parts) < 2 or parts[1] not in fields:
        got = parts[1] if len(parts) > 1 else ""
        raise ConfigError(f"unknown key {dotted!r}; keys of [{section}]: {', '.join(fields)}" if got else
                          f"{dotted!r} names a section, not a key; keys of [{section}]: {', '.join(fields)}")
    key = parts[1]
    target = getattr(cfg, section)
    if fields[key] is DistillConfig:  # a typed subsection: a whole mapping, or one key inside it
        if len(parts) > 2:
            target.distill.set(".".join(parts[2:]), value)
        else:
            target.distill = DistillConfig.from_mapping(value)
        return
    if len(parts) > 2:
        if typing.get_origin(fields[key]) is not dict:
            raise ConfigError(f"{section}.{key} is not a mapping, so {dotted!r} cannot set a key inside it")
        getattr(target, key)[".".join(parts[2:])] = value
        return
    setattr(target, key, _coerce(value, fields[key], dotted))


def apply_mapping(cfg: Config, mapping: dict[str, Any], source: str = "recipe") -> Config:
    """Apply a nested ``{section: {key: value}}`` mapping (a parsed recipe) onto ``cfg``."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(mapping).__name__}")
    for section, values in mapping.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown config section {section!r}; sections: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys, got {values!r}")
        for key, value in values.items():
            set_value(cfg, f"{section}.{key}", value)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=1e-3'`` -> ``('optim.lr', 0.001)``; the value is read as YAML (numbers, true/false, null, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value (e.g. optim.lr=1e-3)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_ConfigLoader) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: a tag whose text does not convert (!!float abc)
        value = raw
    if _refers_to_itself(value):
        raise ConfigError(f"{key.strip()}: the value {raw!r} refers to itself (a YAML alias inside its anchor)")
    return key.strip(), value


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe reader for recipes and overrides, except that a date or time stays the text it was
    (``run_name=2026-12-01`` is a name, and ``2026-13-01`` would otherwise be a ValueError from the date
    constructor)."""


_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _refers_to_itself(value: Any, inside: tuple[int, ...] = ()) -> bool:
    """Whether a parsed value contains itself (``&a [*a]``), which no check or YAML dump could walk to its end."""
    if not isinstance(value, (list, dict)):
        return False
    if id(value) in inside:
        return True
    items = value.values() if isinstance(value, dict) else value
    return any(_refers_to_itself(item, (*inside, id(value))) for item in items)


def load_config(recipe: str | Path | None = None, overrides: Iterable[str] = (),
                settings: Iterable[tuple[str, Any]] = ()) -> Config:
    """The embedded default, then a YAML recipe, then ``settings`` (``(section.key, value)`` pairs of already typed
    values: the command line's shorthands), then ``section.key=value`` overrides; validated as a whole."""
    cfg = Config()
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        try:
            mapping = yaml.load(path.read_text(), Loader=_ConfigLoader) or {}
        except (yaml.YAMLError, ValueError) as err:
            raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
        if _refers_to_itself(mapping):
            raise ConfigError(f"recipe {path} holds a value that refers to itself (a YAML alias inside its anchor)")
        apply_mapping(cfg, mapping, source=str(path))
    for dotted, value in settings:
        set_value(cfg, dotted, value)
    for text in overrides:
        set_value(cfg, *parse_override(text))
    return cfg.validate()


def config_from_dict(mapping: dict[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. the one stored in last.pt)."""
    return apply_mapping(Config(), mapping, source="stored config").validate()


__all__ = [
    "Config", "ConfigError", "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
    "CheckpointConfig", "LogConfig", "DistConfig", "SECTIONS", "load_config", "set_value", "apply_mapping",
    "parse_override", "config_from_dict", "DistillConfig",
]

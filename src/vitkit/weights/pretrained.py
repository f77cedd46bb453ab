"""One entry point for pretrained weights: local files whatever their origin, and Hugging Face Hub repos by name.

Local formats: vitkit safetensors, timm state dicts (.pth / .safetensors), Hugging Face ViT folders (config.json +
model.safetensors or pytorch_model.bin) and Google / big_vision .npz. Hub repos (files fetched by huggingface_hub,
see hub.py): timm's (``timm/<model>.<tag>``, written by timm's ``save_for_hf``) and transformers ViTs
(``google/vit-base-patch16-224``). A repo's own config files give the architecture, the preprocessing (input size,
mean, std, crop_pct, interpolation), the label names and the license; its weights then go through the same importer
as a local file of that format.

How a ``pretrained`` value is read: a Path, an existing path or a name ending in a weight-file suffix is a local
file (as before); ``hf-hub:<repo>`` or ``namespace/name[@revision]`` is a hub repo; ``<model>.<tag>`` with a
registered model is timm's repo ``timm/<model>.<tag>``; a bare tag is a tag of the model being built; ``True``
needs the tag in the model name (timm's hub holds one repo per tag, and only timm's source code knows its default).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import registry
from ..models.contract import VitkitModel
from ..models.registry import build_from_config
from .convert import LoadReport, WeightLoadError, load_into_model
from .hf import (
    class_names_from_hf_config,
    convert_hf,
    data_config_from_hf_preprocessor,
    read_hf_config,
    read_hf_preprocessor_config,
    vit_kwargs_from_hf_config,
)
from .hub import (
    CONFIG_FILE,
    HUB_PREFIX,
    WEIGHT_FILES,
    HubRepo,
    HubRepoError,
    first_hub_file,
    hub_file,
    is_hub_id,
    license_from_model_card,
    optional_hub_file,
    parse_hub_id,
)
from .io import load_checkpoint, read_checkpoint_metadata, read_state_dict
from .npz import convert_npz, read_npz, vit_kwargs_from_npz
from .timm import (
    TIMM_HUB_ORG,
    class_names_from_timm_config,
    convert_timm,
    data_config_from_timm_config,
    is_timm_hub_config,
    license_from_timm_config,
    split_model_tag,
    timm_architecture,
    timm_default_repo,
    vit_kwargs_from_timm_config,
)

FORMATS = ("vitkit", "timm", "hf", "npz")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npz")
_BARE_TAG = re.compile(r"[A-Za-z0-9][\w-]*")
# constructor arguments of a transformers ViT config that change what a registered architecture computes, not its
# shapes: loading such a repo into a registered name keeps them, so the logits are the repo's
_HF_FUNCTION_KWARGS = ("norm_eps", "mlp_act")

Source = Path | HubRepo


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise ValueError(f"{path} is a folder without config.json; expected a Hugging Face model folder")
    if path.suffix == ".npz":
        return "npz"
    if path.suffix == ".safetensors":
        try:
            read_checkpoint_metadata(path)
            return "vitkit"
        except ValueError:
            pass
    state = read_state_dict(path)
    return "hf" if any(k.startswith(("vit.", "embeddings.", "encoder.layer")) for k in state) else "timm"


def _hf_weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has no model.safetensors or pytorch_model.bin")


def read_foreign(path: str | Path, fmt: str | None = None) -> tuple[str, dict[str, torch.Tensor], list[str]]:
    """Read a file or folder and rename its tensors to vitkit's names: (format, state dict, unconvertible keys)."""
    fmt, state, unmatched, _ = _read_foreign(Path(path), fmt)
    return fmt, state, unmatched


def _read_foreign(path: Path, fmt: str | None) -> tuple[str, dict[str, torch.Tensor], list[str], int]:
    """As read_foreign, plus how many keys the format's table renamed."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}; expected one of {FORMATS}")
    if fmt == "vitkit":
        return fmt, read_state_dict(path), [], 0
    if fmt == "npz":
        raw = read_npz(path)
        state, unmatched = convert_npz(raw)
    elif fmt == "hf":
        raw = read_state_dict(_hf_weights_file(path) if path.is_dir() else path)
        state, unmatched = convert_hf(raw)
    else:
        raw = read_state_dict(path)
        state, unmatched = convert_timm(raw)
    return fmt, state, unmatched, sum(k not in raw for k in state)


def _load_file(model: nn.Module, path: Path, strict: bool, fmt: str | None, label: str) -> LoadReport:
    fmt, state, unmatched, renamed = _read_foreign(path, fmt)
    if unmatched:
        msg = f"{label} ({fmt}) has tensors vitkit cannot place: {', '.join(unmatched[:10])}"
        if strict:
            raise WeightLoadError(msg + " (pass strict=False to skip them)")
        import warnings

        warnings.warn(msg, stacklevel=3)
    report = load_into_model(model, state, strict=strict, source=f"{label} ({fmt})")
    report.unexpected.extend(unmatched)
    report.source, report.fmt, report.converted = label, fmt, renamed
    return report


# --- hub repos ------------------------------------------------------------------------------------------------------


@dataclass
class HubCheckpoint:
    """A hub repo as vitkit reads it: its format, config, weights file, preprocessing, labels and license."""

    repo: HubRepo
    fmt: str  # "timm" (timm's save_for_hf) or "hf" (transformers' save_pretrained)
    config: dict[str, Any]
    weights: Path | None  # None when only the config was asked for
    data_config: dict[str, Any]
    class_names: list[str] | None
    license: str | None

    @property
    def architecture(self) -> str | None:
        """The registered vitkit name a timm repo was saved from; None for a transformers repo (built from its
        config as a plain ViT)."""
        return timm_architecture(self.config) if self.fmt == "timm" else None

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments the repo's config gives: timm's model_args, or a whole transformers ViT config."""
        return vit_kwargs_from_timm_config(self.config) if self.fmt == "timm" else vit_kwargs_from_hf_config(self.config)

    @property
    def label(self) -> str:
        return f"{self.repo}/{self.weights.name}" if self.weights else str(self.repo)


def read_hub_checkpoint(repo: HubRepo, weights: bool = True) -> HubCheckpoint:
    """Fetch a repo's config.json (and its weights: safetensors first) through huggingface_hub and read them."""
    config = json.loads(hub_file(repo, CONFIG_FILE).read_text())
    readme = optional_hub_file(repo, "README.md")
    card_license = license_from_model_card(readme.read_text(errors="replace")) if readme else None
    if is_timm_hub_config(config):
        fmt = "timm"
        data_config = data_config_from_timm_config(config)
        class_names = class_names_from_timm_config(config)
        license_ = license_from_timm_config(config) or card_license
    elif "model_type" in config:
        fmt = "hf"
        pp_file = optional_hub_file(repo, "preprocessor_config.json")
        pp = json.loads(pp_file.read_text()) if pp_file else None
        data_config = data_config_from_hf_preprocessor(pp, _hf_image_size(config), config.get("num_channels", 3))
        class_names = class_names_from_hf_config(config)
        license_ = card_license
    else:
        raise HubRepoError(f"{repo}: its config.json is neither timm's (it names an 'architecture') nor "
                           "transformers' (a 'model_type'); vitkit reads those two")
    weights_file = first_hub_file(repo, WEIGHT_FILES) if weights else None
    return HubCheckpoint(repo, fmt, config, weights_file, data_config, class_names, license_)


def _hf_image_size(config: dict[str, Any]) -> int:
    size = config.get("image_size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)


def _needs_tag(arch: str) -> ValueError:
    default = timm_default_repo(arch)
    hint = (f" timm's own default for {arch!r} is {default!r}: create_model({default.split('/', 1)[1]!r}, "
            "pretrained=True)." if default else "")
    return ValueError(
        f"pretrained=True needs a pretrained tag in the model name: the hub holds one repo per set of weights, "
        f"{TIMM_HUB_ORG}/<model>.<tag> (e.g. 'vit_base_patch16_224.augreg2_in21k_ft_in1k').{hint} Pass "
        f"'{arch}.<tag>', a hub repo (pretrained='{TIMM_HUB_ORG}/{arch}.<tag>') or a local weight file"
    )


def resolve_source(pretrained: str | Path | bool | None, arch: str = "", tag: str = "") -> Source | None:
    """Where ``pretrained`` points: None (no weights), a local Path, or a HubRepo (see the module docstring)."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        if not tag:
            raise _needs_tag(arch)
        return parse_hub_id(f"{TIMM_HUB_ORG}/{arch}.{tag}")
    if isinstance(pretrained, Path):
        return pretrained
    text = str(pretrained)
    if text.startswith(HUB_PREFIX):
        return parse_hub_id(text)
    if Path(text).exists() or text.endswith(WEIGHT_SUFFIXES):
        return Path(text)
    missing = "no local file or folder of that name exists"
    if is_hub_id(text):
        return parse_hub_id(text, f"{text!r} was read as a hub repo: {missing}")
    base, model_tag = split_model_tag(text)
    if model_tag and base in registry.list_models():
        return parse_hub_id(f"{TIMM_HUB_ORG}/{text}", f"{text!r} was read as timm's weights of that name: {missing}")
    if arch and _BARE_TAG.fullmatch(text):
        return parse_hub_id(f"{TIMM_HUB_ORG}/{arch}.{text}", f"{text!r} was read as a timm tag of {arch!r}: {missing}")
    return Path(text)


def _model_from_hub(
    repo: HubRepo, arch: str | None, strict: bool, overrides: dict[str, Any], weights: bool = True
) -> VitkitModel:
    """Build the model a repo describes (or ``arch``, a registered name) and load the repo's weights into it."""
    ckpt = read_hub_checkpoint(repo, weights)
    repo_arch = ckpt.architecture
    if ckpt.fmt == "timm":
        if arch is None and repo_arch not in registry.list_models():
            raise ValueError(f"{repo} holds timm's {repo_arch!r}, which vitkit does not build (vitkit.list_models() "
                             "lists what it does)")
        name = arch or repo_arch
        kwargs = ckpt.model_kwargs() if name == repo_arch else {}  # the user picked another architecture
        model = registry.create_model(name, **{**kwargs, **overrides})
    elif arch is None:
        model = build_from_config("vit", {**ckpt.model_kwargs(), **overrides})
    else:
        kept = {k: v for k, v in ckpt.model_kwargs().items() if k in _HF_FUNCTION_KWARGS}
        model = registry.create_model(arch, **{**kept, **overrides})
    in_chans = int(model.config.get("in_chans", ckpt.data_config["input_size"][0]))
    size = model.config.get("img_size")
    model.data_config = {**ckpt.data_config, "input_size": [in_chans, *size] if size else ckpt.data_config["input_size"]}
    if weights:
        report = _load_file(model, ckpt.weights, strict, ckpt.fmt, ckpt.label)
        report.license = ckpt.license
        model.load_report = report
        if ckpt.class_names and report.head_replaced is None and len(ckpt.class_names) == model.num_classes:
            model.class_names = ckpt.class_names
    return model


# --- entry points ---------------------------------------------------------------------------------------------------


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True, fmt: str | None = None) -> LoadReport:
    """Load weights of any supported format into ``model``, adapting head and resolution; return the report.

    ``path``: a local file or folder, or a hub repo (``'timm/<model>.<tag>'``, ``'google/vit-base-patch16-224'``).
    """
    source = resolve_source(path)
    if isinstance(source, HubRepo):
        ckpt = read_hub_checkpoint(source)
        report = _load_file(model, ckpt.weights, strict, fmt or ckpt.fmt, ckpt.label)
        report.license = ckpt.license
        return report
    return _load_file(model, source, strict, fmt, str(source))


def model_from_pretrained(
    path: str | Path, name: str | None = None, strict: bool = True, **overrides: Any
) -> nn.Module:
    """Build the model a weight file or hub repo describes and load it.

    vitkit files, Hugging Face folders and hub repos carry their config, .npz files are read off their shapes; a
    timm state dict file needs the registered ``name`` (its heads cannot be read off shapes). ``overrides``
    (num_classes, img_size ...) turn the load into a fine-tuning load: a new head, a resampled position embedding.
    The report is ``model.load_report``.
    """
    source = resolve_source(path, name or "")
    if isinstance(source, HubRepo):
        return _model_from_hub(source, name, strict, overrides)
    path = source
    fmt = detect_format(path)
    class_names = None
    if name is not None:
        model = registry.create_model(name, **overrides)
    elif fmt == "vitkit":
        meta = read_checkpoint_metadata(path)
        model = build_from_config(meta["arch"], {**meta["config"], **overrides})
        model.data_config = meta["data_config"]
        class_names = meta["extra"].get("class_names")
    elif fmt == "hf":
        cfg = read_hf_config(path)
        model = build_from_config("vit", {**vit_kwargs_from_hf_config(cfg), **overrides})
        class_names = class_names_from_hf_config(cfg)
        pp = read_hf_preprocessor_config(path) if path.is_dir() else None
        model.data_config = data_config_from_hf_preprocessor(pp, _hf_image_size(cfg), cfg.get("num_channels", 3))
    elif fmt == "npz":
        model = build_from_config("vit", {**vit_kwargs_from_npz(read_npz(path)), **overrides})
        model.data_config = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 0.875}
    else:
        raise ValueError(f"{path} looks like a timm state dict; pass the registered model name (name=...) to build it")
    model.load_report = _load_file(model, path, strict, fmt, str(path))
    if class_names and "num_classes" not in overrides:
        model.class_names = class_names
    return model


def load_model(source: str | Path) -> nn.Module:
    """A vitkit checkpoint path, or a registered model name (random weights: enough for speed, not for accuracy)."""
    if Path(source).exists() or str(source).endswith(".safetensors"):
        return load_checkpoint(source)
    return registry.create_model(str(source))


def _arch_and_tag(name: str) -> tuple[str, str]:
    """A model name as timm writes it -> (registered architecture, pretrained tag or "")."""
    if name in registry.list_models() or "." not in name:
        return name, ""
    arch, tag = split_model_tag(name)
    registry.get_model_spec(arch)  # an unknown architecture: the error names the closest registered names
    return arch, tag


def fetch_pretrained(name: str, pretrained: str | Path | bool | None) -> None:
    """Make sure the weights ``create_model(name, pretrained=...)`` would load are at hand, before anything slow
    happens: a hub repo's files are fetched into the Hugging Face cache (or the not-cached error is raised now), a
    local path must exist. The training loop calls it before it decodes any data."""
    if name.startswith(HUB_PREFIX):
        if pretrained:
            read_hub_checkpoint(parse_hub_id(name))
        return
    source = resolve_source(pretrained, *_arch_and_tag(name))
    if isinstance(source, HubRepo):
        read_hub_checkpoint(source)
    elif source is not None and not source.exists():
        raise FileNotFoundError(f"weights not found: {source}")


def create_model(
    name: str, pretrained: str | Path | bool | None = None, strict: bool = True, **overrides: Any
) -> VitkitModel:
    """Build a registered model; ``pretrained`` loads weights: a local file (vitkit, timm, Hugging Face folder or
    .npz), a hub repo, or ``True`` for the timm weights the name's tag names.

    ``name`` may carry timm's pretrained tag (``'vit_base_patch16_224.augreg2_in21k_ft_in1k'``: with
    pretrained=True the weights of ``timm/<name>``) or be a hub repo (``'hf-hub:timm/...'``: the architecture and
    preprocessing of its config.json, its weights with pretrained=True), as in timm. With overrides such as
    ``num_classes=10`` or ``img_size=384`` the load becomes a fine-tuning load: the head is replaced and the position
    embedding resampled; every other mismatch is an error (or a warning if strict=False). The report of what was
    loaded and adapted is ``model.load_report`` (``describe()`` for a paragraph).
    """
    if name.startswith(HUB_PREFIX):
        if pretrained not in (None, False, True):
            raise ValueError(f"create_model({name!r}) names the weights' repo already; pass pretrained=True (its "
                             f"weights) or nothing (its architecture only), not pretrained={pretrained!r}")
        return _model_from_hub(parse_hub_id(name), None, strict, overrides, weights=bool(pretrained))
    arch, tag = _arch_and_tag(name)
    source = resolve_source(pretrained, arch, tag)
    if isinstance(source, HubRepo):
        return _model_from_hub(source, arch, strict, overrides)
    model = registry.create_model(arch, **overrides)
    if source is not None:
        model.load_report = _load_file(model, source, strict, None, str(source))
    return model

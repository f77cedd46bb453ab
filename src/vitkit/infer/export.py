"""Export a vitkit model as ONNX, TorchScript, plain safetensors or a Hugging Face folder -- each one verified.

An export is written to a temporary path, loaded back by the runtime that will serve it (onnxruntime,
torch.jit.load, vitkit.load_checkpoint, transformers) and compared with eager PyTorch on random inputs at two batch
sizes and on real images when given; only if every max abs diff is within the tolerance is it moved into place.
A failed check leaves nothing behind and raises :class:`ExportParityError` with the numbers.

ONNX: the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``) at opset 17 is the default. On torch
2.14.1 both exporters give the same parity (about 1e-6) with a dynamic batch axis, but the legacy one exports
vit_tiny in 2.5 s against 32 s and writes one self-contained file; ``exporter="dynamo"`` (opset 18) is available.
Dynamic image size is not offered: the position embedding is resampled with antialiased bicubic interpolation,
which the legacy exporter cannot express (``aten::_upsample_bicubic2d_aa``) and the dynamo exporter freezes at the
traced size (checked with Dim-constrained heights/widths: every other size then fails in onnxruntime).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..data.preprocess import Preprocessing
from ..models.contract import VitkitModel
from ..runtime import unwrap_model
from ..utils.fileio import atomic_path
from ..weights import io as weights_io
from ..weights.hf import vitkit_to_hf_state
from .preprocess import InferenceSpec

EXPORT_FORMATS = ("onnx", "torchscript", "safetensors", "hf")
DEFAULT_OPSET = 17
DYNAMO_OPSET = 18
DEFAULT_ATOL = 1e-4


class ExportParityError(RuntimeError):
    """The exported artifact does not reproduce the eager model within the tolerance."""


@dataclass
class ParityCheck:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float


@dataclass
class ExportReport:
    format: str
    path: Path
    atol: float
    checks: list[ParityCheck] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        return max(c.max_abs_diff for c in self.checks)

    def describe(self) -> str:
        lines = [f"exported {self.format} -> {self.path}" + "".join(f" ({k}={v})" for k, v in self.details.items())]
        for c in self.checks:
            lines.append(f"  parity {c.name:12s} input {tuple(c.shape)!s:18s} max abs diff {c.max_abs_diff:.3e}")
        lines.append(f"  verified: max abs diff {self.max_abs_diff:.3e} <= tolerance {self.atol:g}")
        return "\n".join(lines)


# --- runtimes that load an artifact back ----------------------------------------------------------------------------


class OnnxModel:
    """An ONNX file behind onnxruntime, called like a module: float tensor (B, C, H, W) in, logits tensor out.

    A vitkit export carries its preprocessing and class names in the model metadata (:attr:`preprocessing`,
    :attr:`class_names`), so the file alone turns images into labels. ``threads`` defaults to torch's intra-op thread count, so one knob (torch.set_num_threads) governs both
    runtimes and comparisons between them use the same number of cores.
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing stored by ``export_model`` (metadata ``vitkit.preprocessing``)."""
        raw = self.metadata.get("vitkit.preprocessing")
        if raw is None:
            raise ValueError(f"{self.path} has no vitkit.preprocessing metadata (not exported by vitkit)")
        return Preprocessing.from_dict(json.loads(raw))

    @property
    def class_names(self) -> list[str]:
        raw = self.metadata.get("vitkit.class_names")
        if raw is None:
            raise ValueError(f"{self.path} has no vitkit.class_names metadata (not exported by vitkit)")
        return list(json.loads(raw))


# --- the export entry point -----------------------------------------------------------------------------------------


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    *,
    check_inputs: torch.Tensor | None = None,
    atol: float = DEFAULT_ATOL,
    opset: int | None = None,
    exporter: str = "torchscript",
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` (fp32, CPU) to ``out`` in ``fmt`` and verify it; ``check_inputs`` is a batch of real images,
    already preprocessed by the model's own preprocessing.

    Every format carries the model's :class:`~vitkit.data.preprocess.Preprocessing` and class names: ONNX in its
    metadata (``vitkit.preprocessing``, ``vitkit.class_names``), TorchScript in ``vitkit.json``, safetensors in the
    checkpoint metadata, Hugging Face as ``preprocessor_config.json`` (checked to reproduce it) and ``id2label``."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    model = unwrap_model(model).eval().to("cpu", torch.float32)
    spec = InferenceSpec.from_model(model)
    inputs = _parity_inputs(spec, check_inputs, seed)
    out = Path(out)
    if fmt == "hf":
        return _export_hf(model, spec, out, inputs, atol)
    report = ExportReport(fmt, out, atol)
    with _staged(out) as tmp:
        if fmt == "onnx":
            opset = opset or (DYNAMO_OPSET if exporter == "dynamo" else DEFAULT_OPSET)
            _write_onnx(model, spec, tmp, inputs["random_b2"], opset, exporter)
            runner: Callable[[torch.Tensor], torch.Tensor] = OnnxModel(tmp)
            report.details.update(opset=opset, exporter=exporter, dynamic_axes="batch")
        elif fmt == "torchscript":
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                traced = torch.jit.trace(model, inputs["random_b2"], check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={"vitkit.json": json.dumps(_spec_metadata(spec))})
                runner = torch.jit.load(str(tmp), map_location="cpu")
        else:  # safetensors: vitkit's own checkpoint, which any safetensors reader can open
            meta = getattr(model, "checkpoint_meta", None) or {}
            extra = {**(meta.get("extra") or {"class_names": list(spec.class_names)}),
                     "preprocessing": spec.preprocessing.to_dict()}
            weights_io.save_checkpoint(model, tmp, metadata=extra)
            runner = weights_io.load_checkpoint(tmp).eval()
        report.checks = _compare(model, runner, inputs)
        _raise_if_off(report)
    return report


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A path with ``out``'s own name in a fresh folder beside it; moved over ``out`` only if the block succeeds.

    The runtimes that verify an export dispatch on the file name, hence a folder rather than a temporary name.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = folder / out.name
        yield staged
        if staged.is_dir():
            if out.is_dir():
                shutil.rmtree(out)
            os.replace(staged, out)
        else:
            with atomic_path(out) as tmp:
                os.replace(staged, tmp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _parity_inputs(spec: InferenceSpec, real: torch.Tensor | None, seed: int) -> dict[str, torch.Tensor]:
    """Random normal inputs at batch 2 (the traced size) and 3 (proves the batch axis is dynamic), plus real ones."""
    g = torch.Generator().manual_seed(seed)
    shape = (spec.in_chans, *spec.img_size)
    inputs = {"random_b2": torch.randn(2, *shape, generator=g), "random_b3": torch.randn(3, *shape, generator=g)}
    if real is not None:
        if tuple(real.shape[1:]) != shape:
            raise ValueError(f"check images have shape {tuple(real.shape[1:])}, the model expects {shape}")
        inputs["real_images"] = real.float()
    return inputs


@torch.no_grad()
def _compare(model: nn.Module, runner: Callable, inputs: dict[str, torch.Tensor]) -> list[ParityCheck]:
    checks = []
    for name, x in inputs.items():
        expected = model(x)
        got = runner(x)
        got = got.logits if hasattr(got, "logits") else got
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportParityError(f"{name}: exported model returned shape {tuple(got.shape)}, eager {tuple(expected.shape)}")
        checks.append(ParityCheck(name, tuple(x.shape), float((got.float() - expected).abs().max())))
    return checks


def _raise_if_off(report: ExportReport) -> None:
    bad = [c for c in report.checks if not (c.max_abs_diff <= report.atol)]  # NaN fails too
    if bad:
        worst = ", ".join(f"{c.name}: {c.max_abs_diff:.3e}" for c in bad)
        raise ExportParityError(
            f"{report.format} export to {report.path} does not match eager PyTorch: max abs diff {worst} "
            f"> tolerance {report.atol:g}; nothing was written"
        )


def _spec_metadata(spec: InferenceSpec) -> dict[str, Any]:
    """``preprocessing`` is the whole record; the flat keys beside it are kept for readers that predate it."""
    return {
        "class_names": list(spec.class_names), "preprocessing": spec.preprocessing.to_dict(),
        "mean": list(spec.mean), "std": list(spec.std), "img_size": list(spec.img_size), "in_chans": spec.in_chans,
        "crop_pct": spec.crop_pct,
    }


# --- ONNX -----------------------------------------------------------------------------------------------------------


def _write_onnx(model: nn.Module, spec: InferenceSpec, path: Path, example: torch.Tensor, opset: int, exporter: str) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes (static here)
        if exporter == "torchscript":
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset, input_names=["pixel_values"],
                output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            )
        elif exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=["pixel_values"],
                output_names=["logits"], dynamic_shapes={"x": {0: batch}}, verbose=False,
            )
            program.save(str(path), external_data=False)
        else:
            raise ValueError(f"unknown ONNX exporter {exporter!r}; expected 'torchscript' or 'dynamo'")
    proto = onnx.load(str(path))
    for key, value in _spec_metadata(spec).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"vitkit.{key}", json.dumps(value)
    onnx.save(proto, str(path))


# --- Hugging Face ---------------------------------------------------------------------------------------------------


def _check_hf_compatible(model: nn.Module) -> None:
    """transformers' ViT is the original ViT: refuse the options it cannot represent, naming them."""
    cfg = model.config
    if not isinstance(model, VitkitModel) or model.arch != "vit":
        raise ValueError(f"only plain ViT models export to Hugging Face, not {type(model).__name__}"
                         f"{f' (arch {model.arch!r})' if isinstance(model, VitkitModel) else ''}")
    wanted = {
        "class_token": True, "reg_tokens": 0, "no_embed_class": False, "pos_embed": "learned", "pooling": "cls",
        "pre_norm": False, "final_norm": True, "init_values": None, "qk_norm": False, "dynamic_img_size": False,
    }
    bad = [f"{k}={cfg.get(k)!r} (needs {v!r})" for k, v in wanted.items() if cfg.get(k, v) != v]
    if cfg.get("fc_norm"):
        bad.append("fc_norm=True (needs False)")
    if cfg.get("num_classes", 0) <= 0:
        bad.append("num_classes=0 (ViTForImageClassification needs a head)")
    if bad:
        raise ValueError("transformers' ViTForImageClassification cannot represent this model: " + ", ".join(bad))


def _hf_config(model: nn.Module, spec: InferenceSpec):
    from transformers import ViTConfig

    cfg = model.config
    dim = cfg["embed_dim"]
    return ViTConfig(
        hidden_size=dim, num_hidden_layers=cfg["depth"], num_attention_heads=cfg["num_heads"],
        intermediate_size=model.blocks[0].mlp.fc1.out_features, hidden_dropout_prob=0.0,
        hidden_act={"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}[cfg.get("mlp_act", "gelu")],  # .npz: tanh
        attention_probs_dropout_prob=0.0, layer_norm_eps=cfg.get("norm_eps", 1e-6),
        image_size=list(cfg["img_size"]) if cfg["img_size"][0] != cfg["img_size"][1] else cfg["img_size"][0],
        patch_size=cfg["patch_size"], num_channels=cfg["in_chans"], qkv_bias=cfg.get("qkv_bias", True),
        id2label=dict(enumerate(spec.class_names)), label2id={n: i for i, n in enumerate(spec.class_names)},
    )


#: PIL's resampling codes, which transformers' image-processor configs store (``resample``)
PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}
#: how far (in 0..255 pixel levels) the exported image processor may stray from vitkit's preprocessing
PROCESSOR_TOLERANCE_LEVELS = 4.0


def hf_image_processor_config(preprocessing: Preprocessing) -> dict[str, Any]:
    """Arguments of transformers' ``BitImageProcessor`` that reproduce ``preprocessing``.

    BitImageProcessor is the processor that resizes the shorter side (``size={"shortest_edge": S}``, the longer
    side rounded down), then center-crops (``crop_size``, offset rounded down) -- vitkit's ``shorter_side`` mode;
    ``squash`` is ``size={"height", "width"}``. ViTImageProcessor cannot crop, and ConvNext's ``crop_pct`` only
    covers square inputs below 384 px.
    """
    p = preprocessing
    rh, rw = p.resize_size
    size = {"shortest_edge": max(rh, rw)} if p.resize_mode == "shorter_side" else {"height": rh, "width": rw}
    return {
        "do_resize": True, "size": size, "resample": PIL_RESAMPLE[p.interpolation], "do_center_crop": True,
        "crop_size": {"height": p.img_size[0], "width": p.img_size[1]}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(p.mean), "image_std": list(p.std),
        "do_convert_rgb": True,
    }


def _processor_levels_off(processor, preprocessing: Preprocessing, seed: int) -> float:
    """Max difference, in pixel levels, between the exported image processor and vitkit's preprocessing on random
    images of odd sizes, given as PIL images as the image-classification pipeline gives them."""
    import numpy as np
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    h, w = preprocessing.img_size
    worst = 0.0
    std = torch.tensor(preprocessing.std).view(-1, 1, 1)
    for size in ((2 * h + 13, 3 * w + 7), (h + 5, w + 30), (3 * h + 1, 2 * w)):
        image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
        expected = preprocessing(image)
        pil = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
        got = processor(images=pil, return_tensors="pt")["pixel_values"][0]
        if tuple(got.shape) != tuple(expected.shape):
            return float("inf")
        worst = max(worst, float(((got - expected).abs() * std * 255).max()))
    return worst


def _export_hf(model: nn.Module, spec: InferenceSpec, out: Path, inputs: dict[str, torch.Tensor], atol: float) -> ExportReport:
    from transformers import AutoImageProcessor, BitImageProcessor, ViTForImageClassification

    _check_hf_compatible(model)
    report = ExportReport("hf", out, atol, details={"class": "ViTForImageClassification",
                                                    "image_processor": "BitImageProcessor"})
    with _staged(out) as tmp:
        # The folder is written in the Hub's key layout (weights.hf.HF_NAMES, the table the import reads too, and what
        # every transformers version loads); transformers itself then has to load it for the parity check.
        tmp.mkdir()
        _hf_config(model, spec).save_pretrained(tmp)
        save_file(vitkit_to_hf_state(model.state_dict()), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        BitImageProcessor(**hf_image_processor_config(spec.preprocessing)).save_pretrained(tmp)
        reloaded, info = ViTForImageClassification.from_pretrained(
            tmp, attn_implementation="eager", output_loading_info=True
        )
        problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if problems:
            raise ExportParityError(f"transformers did not load every weight of the exported folder: {problems}")
        report.checks = _compare(model, reloaded.eval(), inputs)
        _raise_if_off(report)
        if spec.in_chans == 3:  # transformers' image processors always give RGB; a 1-channel model gets no check
            levels = _processor_levels_off(AutoImageProcessor.from_pretrained(tmp), spec.preprocessing, seed=0)
            report.details["processor_max_diff_levels"] = round(levels, 3)
            if not levels <= PROCESSOR_TOLERANCE_LEVELS:
                raise ExportParityError(
                    f"the exported image processor ({tmp.name}/preprocessor_config.json) differs from the model's "
                    f"preprocessing by {levels:.3g} pixel levels > {PROCESSOR_TOLERANCE_LEVELS:g}; nothing was written")
    return report


__all__ = [
    "DEFAULT_ATOL", "DEFAULT_OPSET", "EXPORT_FORMATS", "ExportParityError", "ExportReport", "OnnxModel",
    "ParityCheck", "export_model", "hf_image_processor_config", "vitkit_to_hf_state",
]

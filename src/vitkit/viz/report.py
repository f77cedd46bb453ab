"""report.html: one self-contained page per training run, readable from the file system without a server.

Sections: summary, curves, confusion matrix (the whole validation split, one pass of the best weights), a grid of
validation images with predicted / true labels (mistakes first, most confident mistakes first), attention maps for a
few of them, and the config. Every picture is an embedded PNG (data: URI), so the page can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils.fileio import atomic_write_text
from .figures import plot_confusion, plot_curves

SECTIONS = ("Summary", "Training curves", "Confusion matrix", "Validation predictions", "Attention maps",
            "Configuration")


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes, alt: str, css: str = "") -> str:
    return f'<img src="{_png_uri(data)}" alt="{html.escape(alt)}"{f" class={css!r}" if css else ""}>'


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curves_png(run_dir: Path, history: list[dict[str, Any]]) -> bytes | None:
    if (run_dir / "curves.png").is_file():
        return (run_dir / "curves.png").read_bytes()
    return plot_curves(history) if history else None


def _chw(images: np.ndarray, index) -> torch.Tensor:
    """uint8 (B, C, H, W) tensor of some rows of an (N, H, W, C) array or memmap (copied: memmaps are read-only)."""
    return torch.from_numpy(np.array(images[index])).permute(0, 3, 1, 2)


def evaluate_split(model: nn.Module, dataset, mean, std, device: torch.device, batch_size: int = 256) -> dict:
    """The training run's own evaluation of a uint8 array dataset (normalised and resized as it validates), with
    the logits (N, classes) in dataset order. The loader reads batch by batch: a memory-mapped split is never
    copied whole."""
    from ..data import build_loader
    from ..train.evaluate import evaluate

    out_size = tuple(model.config.get("img_size") or dataset.image_size)  # NaViT may have no nominal size
    model.eval().to(device)
    loader = build_loader(dataset, batch_size, train=False, device=device)
    return evaluate(model, loader, num_classes=model.num_classes, mean=mean, std=std, device=device,
                    out_size=out_size, keep_logits=True)


def prediction_order(predictions: torch.Tensor, labels: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """Indices with the mistakes first (most confident first), then the correct ones (least confident first)."""
    wrong = predictions != labels
    key = torch.where(wrong, -confidence, 1.0 + confidence)  # mistakes sort below every correct prediction
    return key.argsort(stable=True)


def _prediction_grid(images: np.ndarray, order: torch.Tensor, predictions, labels, confidence,
                     classes: list[str], count: int) -> str:
    from torchvision.io import encode_png

    cells = []
    for i in order[:count].tolist():
        ok = bool(predictions[i] == labels[i])
        image = _chw(images, [i])[0]
        image = image if image.shape[0] == 3 else image[:1]
        png = encode_png(image.contiguous()).numpy().tobytes()
        cells.append(
            f'<figure class="{"right" if ok else "wrong"}">{_img(png, f"validation image {i}")}<figcaption>'
            f"pred <b>{html.escape(classes[int(predictions[i])])}</b> {100 * float(confidence[i]):.0f}%<br>"
            f"true {html.escape(classes[int(labels[i])])}</figcaption></figure>")
    return '<div class="grid">' + "".join(cells) + "</div>"


def _attention_figures(model: nn.Module, images: np.ndarray, picks: list[int], mean, std, predictions, labels,
                       classes: list[str], device: torch.device) -> str:
    from ..data.decode import fit_to
    from ..train.evaluate import prepare_batch
    from .attention import UnsupportedModelError, attention_maps, check_attention_support, plot_attention

    try:
        check_attention_support(model)
    except UnsupportedModelError as err:
        return f"<p>Not available: {html.escape(str(err))}.</p>"
    size = tuple(model.config["img_size"])
    batch = _chw(images, picks)
    maps = attention_maps(model, prepare_batch(batch.to(device), mean, std, size))
    rollout, roll_prefix = maps.rollout()
    heads, head_prefix = maps.last_layer_heads()
    shown = fit_to(batch, size).float() / 255
    parts = [f"<p>Rollout (mean over heads, no discard) and the last block's heads, read from the {maps.query_label};"
             f" explicit-path logits match the fused forward within {maps.fused_max_abs_diff:.2g}.</p>"]
    for k, i in enumerate(picks):
        title = f"image {i}: predicted {classes[int(predictions[i])]}, true {classes[int(labels[i])]}"
        png = plot_attention(shown[k], rollout[k], heads[k], title=title, prefix_share=float(roll_prefix[k]),
                             head_prefix_share=head_prefix[k].tolist() if maps.num_prefix_tokens > 1 else None)
        parts.append(_img(png, title, "wide"))
    return "".join(parts)


def _prediction_sections(run_dir: Path, dataset, checkpoint: Path, device: torch.device, batch_size: int,
                         grid_images: int, attention_images: int) -> dict[str, str]:
    from ..weights import load_checkpoint

    unavailable = {name: "" for name in ("Confusion matrix", "Validation predictions", "Attention maps")}
    if not checkpoint.is_file():
        return {k: f"<p>Not available: no {checkpoint.name} in the run directory.</p>" for k in unavailable}
    if dataset is None or not hasattr(dataset, "images") or len(dataset) == 0:
        return {k: "<p>Not available: the run has no validation images.</p>" for k in unavailable}
    try:
        model = load_checkpoint(checkpoint, map_location=device)
    except ValueError as err:  # a user module saved without vitkit metadata cannot be rebuilt
        return {k: f"<p>Not available: {html.escape(str(err))}</p>" for k in unavailable}
    extra = getattr(model, "checkpoint_meta", {}).get("extra", {})
    mean, std = extra.get("mean", dataset.mean), extra.get("std", dataset.std)
    classes = [str(c) for c in extra.get("class_names", dataset.classes)]
    images = dataset.images
    labels = torch.as_tensor(dataset.labels[:], dtype=torch.int64)
    result = evaluate_split(model, dataset, mean, std, device, batch_size)
    confidence, predictions = result["logits"].softmax(-1).max(-1)
    accuracy = result["acc1"]
    order = prediction_order(predictions, labels, confidence)
    wrong = order[: int((predictions != labels).sum())].tolist()
    right = order[len(wrong):].tolist()
    first_wrong = wrong[: attention_images // 2]  # half mistakes, half correct, when there are enough of each
    picks = first_wrong + right[: attention_images - len(first_wrong)]
    picks += wrong[len(first_wrong): len(first_wrong) + attention_images - len(picks)]
    return {
        "Confusion matrix": f"<p>{checkpoint.name} on all {len(labels)} validation images: top-1 {accuracy:.2f}% "
                            f"(rows: true class, columns: predicted, row-normalised colour).</p>"
                            + _img(plot_confusion(result["confusion"], classes), "confusion matrix", "wide confusion"),
        "Validation predictions": f"<p>{min(grid_images, len(labels))} of {len(labels)} images, mistakes first "
                                  f"({len(wrong)} mistakes in all).</p>"
                                  + _prediction_grid(images, order, predictions, labels, confidence, classes,
                                                     grid_images),
        "Attention maps": _attention_figures(model, images, picks, mean, std, predictions, labels,
                                             classes, device) if picks else "<p>No images.</p>",
    }


def _table(values: dict[str, Any]) -> str:
    rows = []
    for key, value in values.items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(shown)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .9em; } th, td { padding: .15em .8em; border-bottom: 1px solid #eee;
text-align: left; } th { font-weight: 600; } pre { background: #f6f6f6; padding: 1em; overflow: auto; font-size: .85em; }
img.wide { max-width: 100%; display: block; margin: .5em 0; } img.confusion { max-width: min(100%, 720px); }
.grid { display: flex; flex-wrap: wrap; gap: 6px; }
.grid figure { margin: 0; padding: 3px; width: 104px; font-size: .72em; text-align: center; border: 3px solid; }
.grid figure.wrong { border-color: #d33; } .grid figure.right { border-color: #3a3; }
.grid img { width: 96px; height: 96px; image-rendering: pixelated; object-fit: contain; }
"""


def write_run_report(
    run_dir: str | Path,
    dataset=None,
    *,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    grid_images: int = 48,
    attention_images: int = 4,
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    dataset: the validation split (an array dataset: uint8 ``images`` (N, H, W, C), ``labels``, ``classes``); the
    prediction sections say "not available" without it. checkpoint: default ``run_dir/best.safetensors``.
    grid_images / attention_images cap the drawn images; the confusion matrix always covers the whole split.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    history = _read_history(run_dir)
    curves = _curves_png(run_dir, history)
    body = {
        "Summary": _table(summary) if summary else "<p>No summary.json: the run did not finish.</p>",
        "Training curves": _img(curves, "training curves", "wide") if curves else "<p>No metrics logged.</p>",
        **_prediction_sections(run_dir, dataset, Path(checkpoint) if checkpoint else run_dir / "best.safetensors",
                               torch.device(device), batch_size, grid_images, attention_images),
        "Configuration": f"<pre>{html.escape(config_path.read_text())}</pre>" if config_path.is_file()
        else "<p>No config.yaml.</p>",
    }
    title = f"vitkit run {run_dir.name}"
    sections = "".join(f'<section id="{name.lower().replace(" ", "-")}"><h2>{name}</h2>{body[name]}</section>'
                       for name in SECTIONS)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{sections}</body></html>\n")
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path


def rewrite_run_report(run_dir: str | Path, *, checkpoint: str | Path | None = None,
                       device: str | torch.device = "cpu") -> Path:
    """Rebuild report.html of an existing run directory: its validation split comes from the run's own config.yaml."""
    from ..train import build_datasets, load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} not found: is {run_dir} a vitkit run directory?")
    val = build_datasets(load_config(run_dir / "config.yaml"))[1]
    return write_run_report(run_dir, val, checkpoint=checkpoint, device=device)


def write_run_outputs(run_dir: str | Path, dataset=None, *, curves: bool = True, report: bool = True,
                      device: str | torch.device = "cpu") -> list[Path]:
    """The figures of a finished run, as ``log.curves`` / ``log.report`` ask: curves.png from metrics.jsonl, then
    report.html (see write_run_report). Called by the command that ran the training."""
    run_dir, written = Path(run_dir), []
    if curves:
        history = _read_history(run_dir)
        if history:
            plot_curves(history, run_dir / "curves.png")
            written.append(run_dir / "curves.png")
    if report:
        written.append(write_run_report(run_dir, dataset, device=device))
    return written


__all__ = [
    "write_run_report", "rewrite_run_report", "write_run_outputs", "evaluate_split", "prediction_order", "SECTIONS",
]

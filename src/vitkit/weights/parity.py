"""Parity cases against the peers (timm, Hugging Face, Google .npz layout), run by the tests and benchmarks/parity.py.

Each case builds the peer's model with random weights, moves the weights into vitkit through the importer a user
would use (a file on disk), and returns the max abs difference of the logits on random inputs in float32. The peers
(timm, transformers) are dev extras, imported only by the case that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models import VisionTransformer
from .npz import save_npz
from .pretrained import create_model, load_pretrained, model_from_pretrained

SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


@dataclass
class TimmCase:
    name: str
    size: str = "tiny"
    depth: int = 2
    img_size: int = 32
    patch_size: int = 8
    timm_kwargs: dict[str, Any] = field(default_factory=dict)

    def vitkit_kwargs(self) -> dict[str, Any]:
        """timm argument names -> vitkit's (same architecture)."""
        kw = dict(self.timm_kwargs)
        if "global_pool" in kw:
            kw["pooling"] = {"token": "cls", "avg": "gap"}[kw.pop("global_pool")]
        return kw


TIMM_CASES = [
    TimmCase("tiny_cls", "tiny"),
    TimmCase("small_cls", "small"),
    TimmCase("base_cls", "base"),
    TimmCase("tiny_gap", "tiny", timm_kwargs=dict(global_pool="avg", class_token=False)),
    TimmCase("small_gap_with_cls", "small", timm_kwargs=dict(global_pool="avg")),
    TimmCase("tiny_reg4_gap", "tiny", timm_kwargs=dict(reg_tokens=4, global_pool="avg", class_token=False, no_embed_class=True)),
    TimmCase("small_reg4_cls", "small", timm_kwargs=dict(reg_tokens=4)),
    TimmCase("tiny_layerscale", "tiny", timm_kwargs=dict(init_values=0.1)),
    TimmCase("tiny_qk_norm", "tiny", timm_kwargs=dict(qk_norm=True)),
    TimmCase("small_prenorm_nobias", "small", timm_kwargs=dict(pre_norm=True, qkv_bias=False)),
    TimmCase("base_224_p16", "base", depth=1, img_size=224, patch_size=16),
]


def randomize_weights(module: torch.nn.Module, seed: int, input_shape: tuple[int, ...] | None = None) -> None:
    """Random weights everywhere (also norms, LayerScale, tokens), so no parameter can be silently ignored.

    BatchNorm statistics (LeViT) are measured on random images of ``input_shape`` after the weights are drawn, as a
    training run would leave them: without a normalising residual stream, arbitrary statistics let activations grow
    block after block until float32 rounding alone exceeds any absolute tolerance. Without a shape they are random.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_norm_scale = ("norm" in name or "bn." in name) and name.endswith("weight")  # LayerNorm, BatchNorm
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if is_norm_scale else 0.0))
        batchnorms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in batchnorms:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if batchnorms and input_shape is not None:
            was_training = module.training
            for m in batchnorms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: the statistics of exactly this batch
            module.train()(torch.randn(8, *input_shape, generator=g))
            for m in batchnorms:
                m.momentum = 0.1
            module.train(was_training)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def run_timm_case(case: TimmCase, tmp: Path, seed: int = 0) -> float:
    import timm
    from safetensors.torch import save_file

    dim, heads = SIZES[case.size]
    common = dict(img_size=case.img_size, patch_size=case.patch_size, embed_dim=dim, depth=case.depth,
                  num_heads=heads, num_classes=10)
    torch.manual_seed(seed)
    peer = timm.models.vision_transformer.VisionTransformer(**common, **case.timm_kwargs).eval()
    randomize_weights(peer, seed)
    path = tmp / f"timm_{case.name}.safetensors"
    save_file({k: v.contiguous() for k, v in peer.state_dict().items()}, str(path))
    ours = VisionTransformer(**common, **case.vitkit_kwargs()).eval()
    report = load_pretrained(ours, path)
    assert report.clean and not report.adapted, report.describe()
    x = torch.randn(4, 3, case.img_size, case.img_size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return max_abs_diff(peer(x), ours(x))


# Registered LeViT / CrossViT names at full size, through .pth files (benchmarks/parity.py)
TIMM_VARIANT_NAMES = ("levit_128s", "levit_256", "crossvit_tiny_240", "crossvit_9_dagger_240")


def run_timm_pth_case(tmp: Path, name: str = "vit_tiny_patch16_224", relative: bool = False, **overrides: Any) -> float:
    """A registered name through a .pth file (torch.save of a state dict, read back with weights_only=True).

    ``relative``: the max abs difference divided by the largest |logit| (deep LeViTs with unit-scale random weights
    reach logits in the hundreds, where float32 rounding alone exceeds an absolute 1e-5).
    """
    import timm

    torch.manual_seed(0)
    peer = timm.create_model(name, pretrained=False, **overrides).eval()
    randomize_weights(peer, 0, (3, *peer.pretrained_cfg["input_size"][1:]))
    path = tmp / f"{name}.pth"
    torch.save(peer.state_dict(), path)
    ours = create_model(name, pretrained=path, **overrides).eval()
    size = ours.config["img_size"]
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = peer(x)
        return max_abs_diff(ref, ours(x)) / (ref.abs().max().item() if relative else 1.0)


def run_hf_case(tmp: Path, size: str = "tiny", depth: int = 2, seed: int = 0) -> float:
    from transformers import ViTConfig, ViTForImageClassification

    dim, heads = SIZES[size]
    cfg = ViTConfig(
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=4 * dim,
        image_size=32, patch_size=8, num_labels=10, id2label={i: f"class{i}" for i in range(10)},
        label2id={f"class{i}": i for i in range(10)},
    )
    torch.manual_seed(seed)
    peer = ViTForImageClassification(cfg).eval()
    randomize_weights(peer, seed)
    folder = tmp / f"hf_{size}"
    peer.save_pretrained(folder)
    ours = model_from_pretrained(folder).eval()
    assert ours.class_names == [f"class{i}" for i in range(10)]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return max_abs_diff(peer(pixel_values=x).logits, ours(x))


def run_npz_case(tmp: Path, seed: int = 0) -> dict[str, float]:
    """Write an .npz in Google's layout; load it with timm's own npz loader and with vitkit's; compare all three.

    Google's models compute the tanh-approximate GELU, so the source and timm's model are built with it too.
    """
    import timm

    common = dict(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=10)
    torch.manual_seed(seed)
    source = VisionTransformer(**common, mlp_act="gelu_tanh").eval()
    randomize_weights(source, seed)
    path = tmp / "google_layout.npz"
    save_npz(source, path)
    peer = timm.models.vision_transformer.VisionTransformer(**common, act_layer="gelu_tanh").eval()
    timm.models.vision_transformer._load_weights(peer, str(path))
    ours = model_from_pretrained(path).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        ref = source(x)
        return {"npz_vs_source": max_abs_diff(ours(x), ref), "npz_vs_timm_loader": max_abs_diff(ours(x), peer(x))}

"""Checks every model variant must pass (tests/models/), and the one tiny training loop the model tests share."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import vitkit
from vitkit.weights.parity import max_abs_diff, randomize_weights


def timm_layout_and_parameter_count(name: str) -> tuple[int, int]:
    """A registered name has timm's state-dict keys and shapes; returns (our, timm's) parameter counts (meta)."""
    import timm

    with torch.device("meta"):
        ours, peer = vitkit.create_model(name), timm.create_model(name, pretrained=False)
    ours_sd, peer_sd = ours.state_dict(), peer.state_dict()
    assert set(ours_sd) == set(peer_sd), sorted(set(ours_sd) ^ set(peer_sd))[:10]
    assert all(ours_sd[k].shape == peer_sd[k].shape for k in ours_sd)
    return sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in peer.parameters())


def timm_parity_through_a_file(peer: nn.Module, ours: nn.Module, tmp: Path, input_size: tuple[int, ...]
                               ) -> tuple[float, float]:
    """Random timm weights -> safetensors file -> vitkit.load_pretrained; returns the max abs logit difference in
    float32 relative to the largest |logit|, and in float64 (absolute).

    float64 proves the two compute the same function (rounding vanishes); float32 is what users run. LeViT has no
    normalising residual stream, so unit-scale random weights give logits (and attention logits) in the tens to
    hundreds, where float32 rounding of SDPA vs an explicit softmax alone exceeds an absolute 1e-5.
    """
    from safetensors.torch import save_file

    randomize_weights(peer, 0, input_size)  # BatchNorm statistics too
    path = tmp / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in peer.eval().state_dict().items()}, str(path))
    report = vitkit.load_pretrained(ours, path)
    assert report.clean and not report.adapted, report.describe()
    x = torch.randn(3, *input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = peer(x)
        relative32 = max_abs_diff(ref, ours.eval()(x)) / ref.abs().max().item()
        diff64 = max_abs_diff(peer.double()(x.double()), ours.double()(x.double()))
    return relative32, diff64


def training_losses(model: nn.Module, x, y: torch.Tensor, steps: int = 15, lr: float = 2e-3) -> list[float]:
    """Cross-entropy after each of ``steps`` full-batch AdamW steps on (x, y), the model in train mode; only
    parameters that require gradients are optimized (LoRA freezes the base)."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def checkpointing_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Gradients of one loss without and with gradient checkpointing (the model in train mode)."""
    model.train()
    grads = []
    for on in (False, True):
        model.set_grad_checkpointing(on)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.set_grad_checkpointing(False)
    return grads


def compiled_matches_eager(model: nn.Module, x: torch.Tensor) -> float:
    """torch.compile (aot_eager: Dynamo + AOTAutograd, no C++ build) forward + backward, then the eval diff."""
    compiled = torch.compile(model.train(), backend="aot_eager", fullgraph=True)
    compiled(x).sum().backward()
    model.eval()
    with torch.no_grad():
        return max_abs_diff(compiled(x), model(x))

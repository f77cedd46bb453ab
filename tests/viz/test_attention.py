"""Attention rollout and per-head maps against answers computed by hand, through real models."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.models import VisionTransformer
from vitkit.viz.attention import (
    attention_maps,
    attention_rollout,
    discard_lowest,
    fuse_heads,
    plot_attention,
    query_weights,
    set_resolution,
)

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=4, num_classes=3)


def tiny(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**{**TINY, **kw}).eval()


def force_uniform_attention(model) -> None:
    """Zero every key: all scores are 0, so every query attends uniformly (1/N), in the fused and explicit paths."""
    with torch.no_grad():
        for block in model.blocks:
            dim = block.attn.qkv.in_features
            block.attn.qkv.weight[dim: 2 * dim] = 0
            block.attn.qkv.bias[dim: 2 * dim] = 0


def test_head_fusion_modes_on_a_hand_made_matrix():
    heads = torch.tensor([[[0.2, 0.8], [0.6, 0.4]], [[0.6, 0.4], [0.1, 0.9]]])[None]  # (1, 2 heads, 2, 2)
    torch.testing.assert_close(fuse_heads(heads, "mean")[0], torch.tensor([[0.4, 0.6], [0.35, 0.65]]))
    torch.testing.assert_close(fuse_heads(heads, "max")[0], torch.tensor([[0.6, 0.8], [0.6, 0.9]]))
    torch.testing.assert_close(fuse_heads(heads, "min")[0], torch.tensor([[0.2, 0.4], [0.1, 0.4]]))
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        fuse_heads(heads, "median")


def test_discard_ratio_zeroes_the_weakest_entries_and_rollout_renormalises():
    w = torch.tensor([[[0.9, 0.1], [0.3, 0.7]]])
    kept = discard_lowest(w, 0.5)  # 2 of 4 entries go: 0.1 and 0.3
    torch.testing.assert_close(kept, torch.tensor([[[0.9, 0.0], [0.0, 0.7]]]))
    torch.testing.assert_close(discard_lowest(w, 0.0), w)
    # 0.5 W' + 0.5 I is diagonal, so after row normalisation the rollout is the identity
    torch.testing.assert_close(attention_rollout([w[:, None]], discard_ratio=0.5)[0], torch.eye(2))
    # without discarding: (0.5 W + 0.5 I) rows already sum to 1
    torch.testing.assert_close(attention_rollout([w[:, None]])[0], torch.tensor([[0.95, 0.05], [0.15, 0.85]]))
    with pytest.raises(ValueError, match="discard_ratio"):
        discard_lowest(w, 1.0)


def test_rollout_of_all_to_one_token_attention_is_the_analytic_power():
    """Every query attends only to token 0: A = 0.5 W + 0.5 I, and row i > 0 of A^L is (1 - 2^-L) e_0 + 2^-L e_i."""
    n, layers = 4, 3
    w = torch.zeros(1, 2, n, n)
    w[..., 0] = 1.0
    rollout = attention_rollout([w] * layers)[0]
    expected = torch.zeros(n, n)
    expected[:, 0] = 1 - 0.5**layers
    expected += torch.eye(n) * 0.5**layers
    expected[0, 0] = 1.0
    torch.testing.assert_close(rollout, expected)
    identity = torch.eye(n).expand(1, 2, n, n)
    torch.testing.assert_close(attention_rollout([identity] * layers)[0], torch.eye(n))


@pytest.mark.parametrize("kw,size", [({}, None), ({"reg_tokens": 2}, None), ({"reg_tokens": 2}, (24, 32)),
                                     ({"pooling": "gap", "class_token": False}, None)])
def test_model_with_forced_uniform_attention_gives_the_known_rollout(kw, size):
    """Uniform attention U = J/N is idempotent, so A^L = 2^-L I + (1 - 2^-L) U: a closed form per query token."""
    model = tiny(**kw)
    force_uniform_attention(model)
    if size:
        set_resolution(model, size)
    h, w = size or (16, 16)
    maps = attention_maps(model, torch.randn(2, 3, h, w))  # also verifies explicit == fused logits
    grid = (h // 4, w // 4)
    assert maps.grid == grid
    prefix, patches = model.num_prefix_tokens, grid[0] * grid[1]
    n, depth = prefix + patches, len(model.blocks)
    keep = 0.5**depth
    rollout, prefix_share = maps.rollout()
    if model.pooling == "cls":  # row 0: patches get (1 - 2^-L)/N each
        expected_patch = (1 - keep) / n
        expected_prefix = keep + prefix * (1 - keep) / n
    else:  # mean over the patch rows: each patch column also gets its own 2^-L, shared by P rows
        expected_patch = keep / patches + (1 - keep) / n
        expected_prefix = prefix * (1 - keep) / n
    torch.testing.assert_close(rollout, torch.full((2, *grid), expected_patch))
    torch.testing.assert_close(prefix_share, torch.full((2,), expected_prefix))
    heads, head_prefix = maps.last_layer_heads()
    assert heads.shape == (2, 4, *grid)
    torch.testing.assert_close(heads, torch.full((2, 4, *grid), 1 / n))
    torch.testing.assert_close(head_prefix, torch.full((2, 4), prefix / n))


def test_trained_style_model_maps_are_distributions_and_fusion_changes_them():
    model = tiny(reg_tokens=1).train()
    maps = attention_maps(model, torch.randn(1, 3, 16, 16))
    assert model.training  # the caller's mode is restored
    assert maps.fused_max_abs_diff < 1e-4
    for fusion in ("mean", "max", "min"):
        rollout, share = maps.rollout(fusion, 0.5)
        torch.testing.assert_close(rollout.sum((1, 2)) + share, torch.ones(1))  # rows of the rollout sum to 1
    assert not torch.allclose(maps.rollout("max")[0], maps.rollout("min")[0])


def test_explicit_path_that_disagrees_with_the_fused_one_is_refused(monkeypatch):
    model = tiny()
    attn = model.blocks[1].attn
    monkeypatch.setattr(attn, "_weights", lambda q, k, mask, grid: torch.softmax(q @ k.transpose(-2, -1) * 5, -1))
    with pytest.raises(RuntimeError, match="differ from the fused forward"):
        attention_maps(model, torch.randn(1, 3, 16, 16))


def test_deit_reads_class_and_distillation_tokens_and_hybrid_works():
    deit = vitkit.create_model("deit_tiny_distilled_patch4_32", img_size=8, depth=2, num_classes=3).eval()
    assert deit.arch == "deit"
    weights = query_weights(deit, deit.num_prefix_tokens + 4)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5, 0, 0, 0, 0]))
    maps = attention_maps(deit, torch.randn(1, 3, 8, 8))
    assert maps.num_prefix_tokens == 2 and maps.rollout()[0].shape == (1, 2, 2)
    hybrid = vitkit.create_model("vit_hybrid_conv_tiny_32", depth=2, embed_dim=48, num_heads=3,
                                 conv_channels=(8, 16)).eval()
    assert attention_maps(hybrid, torch.randn(1, 3, 32, 32)).rollout()[0].shape == (1, 8, 8)


def test_navit_is_refused_with_a_clear_error():
    navit = vitkit.create_model("navit_tiny_patch4_32", depth=1)
    with pytest.raises(TypeError, match="NaViT"):
        attention_maps(navit, torch.randn(1, 3, 32, 32))


def test_attention_figure_is_a_png(tmp_path):
    from torchvision.io import decode_png, read_file

    data = plot_attention(torch.rand(3, 16, 16), torch.rand(4, 4), torch.rand(3, 4, 4), tmp_path / "a.png",
                          title="t", prefix_share=0.25, head_prefix_share=[0.1, 0.2, 0.3])
    assert (tmp_path / "a.png").read_bytes() == data
    image = decode_png(read_file(str(tmp_path / "a.png")))
    assert image.shape[0] in (3, 4) and image.shape[2] > 600 and image.float().std() > 10

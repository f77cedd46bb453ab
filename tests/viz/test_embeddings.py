"""Position-embedding similarity and patch-filter PCA on embeddings whose answer is known by construction."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.models import VisionTransformer
from vitkit.viz.embeddings import (
    filter_components,
    plot_filter_components,
    plot_position_similarity,
    position_embedding_grid,
    position_similarity,
)


def tiny(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**{**dict(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                                       num_classes=3), **kw}).eval()


@pytest.mark.parametrize("kw", [{}, {"reg_tokens": 2}, {"reg_tokens": 2, "no_embed_class": True}])
def test_prefix_tokens_are_left_out_and_orthogonal_positions_give_the_identity(kw):
    model = tiny(**kw)
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    with torch.no_grad():
        model.pos_embed.zero_()
        model.pos_embed[0, :prefix] = 7.0  # must not appear anywhere
        model.pos_embed[0, prefix:, :16] = torch.eye(16) * 3  # each position its own axis
    emb, grid = position_embedding_grid(model)
    assert grid == (4, 4) and emb.shape == (16, 32)
    torch.testing.assert_close(position_similarity(model).reshape(16, 16), torch.eye(16))


def test_sincos_similarity_is_symmetric_with_unit_diagonal_and_decays_with_distance():
    model = tiny(pos_embed="sincos2d", class_token=False, pooling="gap", img_size=32)
    sim = position_similarity(model)
    assert sim.shape == (8, 8, 8, 8)
    flat = sim.reshape(64, 64)
    torch.testing.assert_close(flat, flat.T)
    torch.testing.assert_close(flat.diag(), torch.ones(64))
    assert sim[0, 0, 0, 1] > sim[0, 0, 0, 7] and sim[0, 0, 1, 0] > sim[0, 0, 7, 0]


def test_models_without_an_absolute_embedding_are_refused_and_navit_uses_its_tables():
    with pytest.raises(ValueError, match="no absolute position embedding"):
        position_similarity(tiny(pos_embed="none"))
    navit = vitkit.create_model("navit_tiny_patch4_32", depth=1)
    assert position_embedding_grid(navit)[1] == (16, 16)  # no nominal size: the whole max_grid table
    navit = vitkit.create_model("navit_tiny_patch4_32", depth=1, img_size=32)
    emb, grid = position_embedding_grid(navit)
    assert grid == (8, 8)
    torch.testing.assert_close(emb[9], (navit.pos_embed_row[1] + navit.pos_embed_col[1]).detach())  # patch (1, 1)
    assert filter_components(navit, 4)[0].shape == (4, 3, 4, 4)


def test_filter_pca_recovers_the_planted_components():
    """Filters a_i v1 + b_i v2 (+ a constant offset) with var(a) = 4 var(b): components v1, v2, shares 0.8 / 0.2."""
    model = tiny()
    dim, fan = 32, 3 * 4 * 4
    torch.manual_seed(1)
    basis = torch.linalg.qr(torch.randn(fan, 2))[0].T  # two orthonormal pixel patterns
    a = torch.tensor([2.0, -2.0] * 16)
    b = torch.tensor([1.0, 1.0, -1.0, -1.0] * 8)
    with torch.no_grad():
        model.patch_embed.proj.weight.copy_((a[:, None] * basis[0] + b[:, None] * basis[1] + 0.3).view(dim, 3, 4, 4))
    comps, share = filter_components(model, 5)
    assert comps.shape == (2, 3, 4, 4)  # the centred filters have rank 2: no more components exist
    torch.testing.assert_close(share, torch.tensor([0.8, 0.2]))
    for comp, v in zip(comps, basis):
        torch.testing.assert_close(comp.reshape(-1).abs(), v.abs(), atol=1e-5, rtol=1e-4)
        assert comp.reshape(-1)[comp.reshape(-1).abs().argmax()] > 0  # sign convention


def test_deit_leaves_out_both_prefix_tokens():
    deit = vitkit.create_model("deit_tiny_distilled_patch4_32", img_size=8, depth=1)
    emb, grid = position_embedding_grid(deit)
    assert grid == (2, 2)
    torch.testing.assert_close(emb, deit.pos_embed[0, 2:].detach())


def test_hybrid_filters_are_refused():
    hybrid = vitkit.create_model("vit_hybrid_conv_tiny_32", depth=1, conv_channels=(8, 16))
    with pytest.raises(ValueError, match="feature maps"):
        filter_components(hybrid)
    assert position_similarity(hybrid).shape == (8, 8, 8, 8)


def test_figures_are_pngs(tmp_path):
    from torchvision.io import decode_png, read_file

    model = tiny()
    plot_position_similarity(position_similarity(model), tmp_path / "pos.png")
    comps, share = filter_components(model, 8)
    plot_filter_components(comps, share, tmp_path / "filters.png")
    gray = tiny(in_chans=1)
    plot_filter_components(*filter_components(gray, 3), tmp_path / "gray.png")
    for name in ("pos.png", "filters.png", "gray.png"):
        image = decode_png(read_file(str(tmp_path / name)))
        assert image.shape[1] > 200 and image.float().std() > 10, name

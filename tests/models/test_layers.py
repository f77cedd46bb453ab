import pytest
import torch

from vitkit.models import layers
from vitkit.models.layers import Attention, PatchDropout, PatchEmbed, resample_pos_embed, sincos_2d_pos_embed
from vitkit.models.vit import conv_weight_as_linear, flatten_patches


def test_patch_embed_conv_equals_linear_projection_of_flattened_patches():
    """The ViT paper's 'linear projection of flattened 16x16x3 patches' (768 -> D) is our strided conv."""
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=64, patch_size=16, in_chans=3, embed_dim=192)
    x = torch.randn(2, 3, 64, 64)
    conv_tokens = embed(x).flatten(2).transpose(1, 2)
    linear = torch.nn.Linear(16 * 16 * 3, 192)
    with torch.no_grad():
        linear.weight.copy_(conv_weight_as_linear(embed.proj.weight))
        linear.bias.copy_(embed.proj.bias)
    patches = flatten_patches(x, 16)
    assert patches.shape == (2, 16, 768)
    torch.testing.assert_close(linear(patches), conv_tokens, rtol=1e-5, atol=1e-5)
    # and the patch order really is row-major: patch (0, 1) is columns 16..31 of rows 0..15
    torch.testing.assert_close(patches[0, 1], x[0, :, :16, 16:32].permute(1, 2, 0).reshape(-1))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_explicit_attention_path_equals_fused(qk_norm):
    torch.manual_seed(0)
    attn = Attention(64, num_heads=4, qk_norm=qk_norm).eval()
    x = torch.randn(2, 10, 64)
    fused = attn(x)
    explicit, weights = attn(x, need_weights=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    assert weights.shape == (2, 4, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 10))


@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_bf16_cpu_attention_path_computes_sdpa(mask, monkeypatch):
    """bf16 on a CPU takes the explicit matmul path (faster there); it must compute what SDPA computes in fp32."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 16) for _ in range(3))
    attn_mask = {None: None, "bool": torch.rand(17, 17) > 0.3, "float": torch.randn(17, 17)}[mask]
    if mask == "bool":
        attn_mask.fill_diagonal_(True)  # every query keeps a key
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    bf16_mask = attn_mask.bfloat16() if mask == "float" else attn_mask
    out = layers.scaled_dot_product_attention(qb, kb, vb, attn_mask=bf16_mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (qb, kb, vb))
    # the switch restores PyTorch's kernel, which gives the same function
    monkeypatch.setattr(layers, "EXPLICIT_BF16_ATTENTION_ON_CPU", False)
    fused = layers.scaled_dot_product_attention(qb.detach(), kb.detach(), vb.detach(), attn_mask=bf16_mask)
    torch.testing.assert_close(fused.float(), out.detach().float(), rtol=0.05, atol=0.05)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        Attention(65, num_heads=4)


def test_sincos_matches_big_vision_formula():
    pe = sincos_2d_pos_embed((2, 3), 8)
    assert pe.shape == (1, 6, 8)
    # token index 4 is (row 1, col 1); omega = [1, 1/10000]; layout [sin x, cos x, sin y, cos y]
    omega = torch.tensor([1.0, 1e-4])
    expect = torch.cat([torch.sin(1 * omega), torch.cos(1 * omega), torch.sin(1 * omega), torch.cos(1 * omega)])
    torch.testing.assert_close(pe[0, 4], expect)
    expect_r0c2 = torch.cat([torch.sin(2 * omega), torch.cos(2 * omega), torch.zeros(2), torch.ones(2)])
    torch.testing.assert_close(pe[0, 2], expect_r0c2)


def test_resample_pos_embed_keeps_prefix_and_is_identity_at_same_size():
    torch.manual_seed(0)
    pe = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pe, (4, 4)) is pe
    out = resample_pos_embed(pe, (6, 8), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 48, 8)
    torch.testing.assert_close(out[:, :1], pe[:, :1])
    # a constant grid stays constant under bicubic resampling
    const = torch.cat([pe[:, :1], torch.full((1, 16, 8), 0.3)], dim=1)
    torch.testing.assert_close(resample_pos_embed(const, (7, 5))[:, 1:], torch.full((1, 35, 8), 0.3))


def test_resample_pos_embed_errors_name_the_problem():
    with pytest.raises(ValueError, match="cannot infer a square grid from 15"):
        resample_pos_embed(torch.zeros(1, 16, 4), (4, 4))
    with pytest.raises(ValueError, match=r"\(1, N, D\)"):
        resample_pos_embed(torch.zeros(16, 4), (4, 4))


def test_patch_dropout_keeps_prefix_and_fraction_only_in_training():
    drop = PatchDropout(keep_prob=0.5, num_prefix_tokens=1)
    x = torch.arange(17.0).view(1, 17, 1).expand(3, 17, 2)
    out = drop.train()(x)
    assert out.shape == (3, 9, 2)
    assert (out[:, 0] == 0).all()
    assert drop.eval()(x) is x
    with pytest.raises(ValueError, match="keep fraction"):
        PatchDropout(keep_prob=0.0)

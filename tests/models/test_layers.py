"""The model's building blocks (vitkit.models.layers) against references: patch embedding, attention and its
options (windows vs masked full attention, linear attention vs its formula, 2D RoPE's relative-position property;
defaults leave the model unchanged), position embeddings, token dropout, and the MLP's depthwise convolution
(``mlp_dwconv``, SegFormer's Mix-FFN) against a spelled-out reference."""

import pytest
import torch
import torch.nn.functional as F

from vitkit.models import VisionTransformer, layers
from vitkit.models.layers import (
    Attention,
    LinearAttention,
    Mlp,
    PatchDropout,
    PatchEmbed,
    RotaryEmbedding2d,
    WindowAttention,
    resample_pos_embed,
    sincos_2d_pos_embed,
)
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


def _pair(cls, **kwargs):
    torch.manual_seed(0)
    ours = cls(48, 3, **kwargs).eval()
    ref = Attention(48, 3).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("prefix", [0, 1, 5])
def test_window_attention_equals_masked_full_attention(prefix):
    ours, ref = _pair(WindowAttention, window_size=2)
    grid = (4, 6)
    x = torch.randn(3, prefix + 24, 48)
    mask = ours.window_mask(grid, x.shape[1])
    # the reference mask, spelled out: patch (r, c) sees patch (r', c') iff r//2 == r'//2 and c//2 == c'//2
    rc = [(-1, -1)] * prefix + [(r // 2, c // 2) for r in range(4) for c in range(6)]
    spelled = torch.tensor([[a == b or a[0] < 0 or b[0] < 0 for b in rc] for a in rc])
    assert torch.equal(mask, spelled)
    with torch.no_grad():
        expected = ref(x, attn_mask=mask)
        assert torch.allclose(ours(x, grid=grid), expected, atol=1e-5)
        out, weights = ours(x, grid=grid, need_weights=True)
    assert torch.allclose(out, expected, atol=1e-5)
    assert (weights[..., ~mask] == 0).all()


def test_window_model_forward_matches_its_explicit_attention_path():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3, num_classes=4,
                              attention="window", window_size=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, maps = model.forward_with_attention(x)
        assert torch.allclose(model(x), logits, atol=1e-5)
    assert (maps[0][0, 0, 1:, 1:].reshape(64, 8, 8)[0, 4:, 4:] == 0).all()  # patch (0,0) ignores window (1,1)


def test_linear_attention_matches_its_formula_and_weights_path():
    ours, _ = _pair(LinearAttention)
    x = torch.randn(2, 10, 48)
    with torch.no_grad():
        q, k, v = ours.qkv(x).reshape(2, 10, 3, 3, 16).permute(2, 0, 3, 1, 4)
        phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
        a = phi_q @ phi_k.transpose(-2, -1)
        expected = ours.proj(((a / a.sum(-1, keepdim=True)) @ v).transpose(1, 2).reshape(2, 10, 48))
        assert torch.allclose(ours(x), expected, atol=1e-5)
        out, weights = ours(x, need_weights=True)
    assert torch.allclose(out, expected, atol=1e-5) and torch.allclose(weights.sum(-1), torch.ones(2, 3, 10))


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding2d(16)
    grid = (6, 6)
    q, k = torch.randn(16), torch.randn(16)
    t_q = q.expand(1, 1, 36, 16).clone()
    t_k = k.expand(1, 1, 36, 16).clone()
    scores = (rope(t_q, grid) @ rope(t_k, grid).transpose(-2, -1))[0, 0]

    def idx(r, c):
        return r * 6 + c

    assert torch.allclose(scores[idx(1, 2), idx(3, 1)], scores[idx(2, 4), idx(4, 3)], atol=1e-5)  # same offset
    assert not torch.allclose(scores[idx(1, 2), idx(3, 1)], scores[idx(1, 2), idx(1, 2)], atol=1e-3)
    prefix = torch.randn(1, 1, 2, 16)
    assert torch.equal(rope(torch.cat([prefix, t_q], 2), grid)[:, :, :2], prefix)  # prefix tokens not rotated


def test_options_off_leave_state_dict_and_outputs_unchanged():
    torch.manual_seed(0)
    plain = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    for option in (dict(attention="linear"), dict(rope=True), dict(attention="window", window_size=2)):
        torch.manual_seed(0)
        other = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, **option)
        assert other.state_dict().keys() == plain.state_dict().keys()


def test_window_and_rope_refuse_token_dropout():
    with pytest.raises(ValueError, match="token dropout"):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, rope=True,
                          token_keep_rate=0.5)


@pytest.mark.parametrize("prefix", [0, 2])
def test_mix_ffn_equals_conv_over_the_patch_grid(prefix):
    torch.manual_seed(0)
    mlp = Mlp(8, 16, dwconv=True).eval()
    h, w = 3, 5
    x = torch.randn(2, prefix + h * w, 8)
    hidden = mlp.fc1(x)
    # reference: token (r, c) is row r, column c of the grid, patch tokens after the prefix
    img = hidden[:, prefix:].transpose(1, 2).reshape(2, 16, h, w)
    mixed = F.conv2d(img, mlp.dwconv.weight, mlp.dwconv.bias, padding=1, groups=16).reshape(2, 16, h * w)
    expected = mlp.fc2(F.gelu(torch.cat([hidden[:, :prefix], mixed.transpose(1, 2)], dim=1)))
    with torch.no_grad():
        out = mlp(x, grid=(h, w))
        assert torch.allclose(out, expected, atol=1e-5)
        # prefix tokens skip the convolution: they come out as from the plain MLP
        assert torch.allclose(out[:, :prefix], mlp.fc2(F.gelu(hidden[:, :prefix])), atol=1e-6)


def test_mix_ffn_needs_the_grid_and_all_patches():
    mlp = Mlp(8, 16, dwconv=True)
    with pytest.raises(ValueError, match="needs the patch grid"):
        mlp(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="needs all 3x3 patch tokens, got 4"):
        mlp(torch.randn(1, 4, 8), grid=(3, 3))


def test_model_with_mix_ffn_trains_at_two_sizes_and_refuses_token_dropout():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=4,
                              mlp_dwconv=True, dynamic_img_size=True)
    assert all(block.mlp.dwconv is not None for block in model.blocks)
    for size in (32, 16):
        out = model(torch.randn(2, 3, size, size))
        out.sum().backward()
        assert out.shape == (2, 4)
        assert model.blocks[0].mlp.dwconv.weight.grad.abs().sum() > 0
        model.zero_grad()
    plain = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    assert not any("dwconv" in k for k in plain.state_dict())
    with pytest.raises(ValueError, match="token dropout"):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_dwconv=True,
                          token_keep_rate=0.5)

"""The plain ViT's attention options against references: windows vs masked full attention, linear attention vs its
formula, 2D RoPE's relative-position property; defaults leave the model unchanged."""

import pytest
import torch
import torch.nn.functional as F

from vitkit.models import VisionTransformer
from vitkit.models.layers import Attention, LinearAttention, RotaryEmbedding2d, WindowAttention


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

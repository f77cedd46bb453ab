"""The MLP's depthwise convolution (``mlp_dwconv``, SegFormer's Mix-FFN) against a spelled-out reference."""

import pytest
import torch
import torch.nn.functional as F

from vitkit.models import VisionTransformer
from vitkit.models.layers import Mlp


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

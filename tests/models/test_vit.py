"""The plain ViT (vitkit.models.vit): forward options, intermediates, checkpointing, compile, input sizes, inits."""

import pytest
import torch

from vitkit.models import VisionTransformer

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=5)


def tiny(**kw):
    torch.manual_seed(0)
    return VisionTransformer(**{**TINY, **kw})


@pytest.mark.parametrize(
    "kw",
    [{}, {"pooling": "gap"}, {"pooling": "gap", "class_token": False}, {"reg_tokens": 2},
     {"reg_tokens": 2, "no_embed_class": True}, {"pos_embed": "sincos2d", "class_token": False, "pooling": "gap"},
     {"pos_embed": "none"}, {"init_values": 1e-5, "qk_norm": True, "pre_norm": True}],
)
def test_forward_shapes_for_every_option(kw):
    model = tiny(**kw).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 5)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_prefix_tokens + 16, 48)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 48)


def test_features_only_model_has_no_head():
    model = tiny(num_classes=0).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 48)


def test_with_attention_gives_same_logits_and_probabilities():
    model = tiny(reg_tokens=1).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, maps = model.forward_with_attention(x)
    torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-6)
    assert len(maps) == 3 and maps[0].shape == (2, 3, 18, 18)


def test_forward_intermediates():
    model = tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    final, inter = model.forward_intermediates(x, indices=2)
    assert [t.shape for t in inter] == [(2, 48, 4, 4)] * 2
    torch.testing.assert_close(final, model.forward_features(x))
    only = model.forward_intermediates(x, indices=[0, -1], output_fmt="NLC", intermediates_only=True)
    assert [t.shape for t in only] == [(2, 16, 48)] * 2
    normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)[0]
    torch.testing.assert_close(normed.flatten(2).transpose(1, 2), final[:, 1:])
    with_prefix = model.forward_intermediates(x, indices=1, intermediates_only=True, return_prefix_tokens=True)
    assert with_prefix[0][1].shape == (2, 1, 48)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[5])


def test_grad_checkpointing_gives_identical_gradients():
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for ckpt in (False, True):
        model = tiny(drop_path_rate=0.0)
        model.set_grad_checkpointing(ckpt)
        model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_torch_compile_matches_eager():
    model = tiny(depth=1).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_wrong_input_size_error_names_both_sizes():
    model = tiny()
    with pytest.raises(ValueError, match=r"expected input size 32x32, got 48x40"):
        model(torch.randn(1, 3, 48, 40))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))


def test_dynamic_img_size_accepts_multiples_of_patch():
    model = tiny(dynamic_img_size=True).eval()
    assert model(torch.randn(1, 3, 48, 24)).shape == (1, 5)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model(torch.randn(1, 3, 30, 32))
    # at the native size it is the same function as the static model
    static = tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x), static(x))


def test_set_input_size_resamples_pos_embed_to_384_and_non_square():
    model = tiny()
    model.set_input_size((48, 64))
    assert model.pos_embed.shape == (1, 1 + 6 * 8, 48)
    assert model(torch.randn(1, 3, 48, 64)).shape == (1, 5)
    sincos = tiny(pos_embed="sincos2d", class_token=False, pooling="gap")
    sincos.set_input_size(40)
    assert sincos(torch.randn(1, 3, 40, 40)).shape == (1, 5)


def test_token_dropout_only_while_training():
    model = tiny(token_keep_rate=0.5)
    out = model.train().forward_features(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1 + 8, 48)
    assert model.eval().forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 17, 48)


def test_inits():
    jax = tiny(weight_init="jax")
    assert jax.head.weight.abs().max() == 0
    zero = tiny(zero_head=True)
    assert zero.head.weight.abs().max() == 0 and zero.head.bias.abs().max() == 0
    default = tiny()
    std = default.blocks[0].mlp.fc1.weight.std().item()
    assert 0.018 < std < 0.022  # timm's trunc_normal_(std=.02), cut at +-2 absolute like timm
    with pytest.raises(ValueError, match="weight_init"):
        tiny(weight_init="xavier")


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="pooling='cls' needs class_token"):
        tiny(class_token=False)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        tiny(pos_embed="rope")
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        tiny(img_size=30)


def test_drop_path_rises_linearly_with_depth():
    model = tiny(drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


def test_layer_ids_for_layer_decay():
    model = tiny()
    assert model.layer_id("pos_embed") == 0
    assert model.layer_id("blocks.2.mlp.fc1.weight") == 3
    assert model.layer_id("head.weight") == model.num_layers - 1 == 4


def test_mlp_act_gelu_tanh_is_the_tanh_approximation_and_part_of_the_config():
    import torch.nn.functional as F

    model = tiny(mlp_act="gelu_tanh").eval()
    assert model.config["mlp_act"] == "gelu_tanh"
    mlp = model.blocks[0].mlp
    h = torch.randn(2, 5, 48) * 3
    expected = mlp.fc2(F.gelu(mlp.fc1(h), approximate="tanh"))
    torch.testing.assert_close(mlp(h), expected, rtol=0, atol=0)
    exact = tiny().eval()  # same seed, same weights: only the activation differs
    x = torch.randn(2, 3, 32, 32)
    assert (model(x) - exact(x)).abs().max() > 0
    with pytest.raises(ValueError, match="MLP activation must be one of"):
        tiny(mlp_act="relu")

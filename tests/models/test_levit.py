"""LeViT: timm layout, parameter counts and logits; training, checkpointing, BN folding, export, the planner."""

import pytest
import torch

import tests.helpers.models as vc
import vitkit
from vitkit.models.levit import LeViT, attention_bias_index
from vitkit.weights import parity as pc

# 32 px, stride-4 stem: 8x8 -> 4x4 -> 2x2 token grids; a few thousand parameters
TINY = dict(img_size=32, stem_stride=4, embed_dim=(16, 24, 32), key_dim=8, depth=(1, 1, 1), num_heads=(2, 3, 4),
            num_classes=4)
PARAMS = {"levit_128s": 7777058, "levit_128": 9213936, "levit_192": 10947069, "levit_256": 18893876,
          "levit_384": 39128836}  # timm 1.0 (LevitDistilled, BatchNorm1d layout)


def tiny(**extra) -> LeViT:
    torch.manual_seed(0)
    return vitkit.create_model("levit_128s_stem4_32", **{**TINY, **extra})


@pytest.mark.parametrize("name", list(PARAMS))
def test_registered_names_have_timms_layout_and_parameter_count(name):
    pytest.importorskip("timm")
    assert vc.timm_layout_and_parameter_count(name) == (PARAMS[name], PARAMS[name])


@pytest.mark.parametrize("distilled", [True, False])
def test_timm_logit_parity_through_a_file(distilled, tmp_path):
    timm = pytest.importorskip("timm")
    from timm.models.levit import Levit, LevitDistilled

    cfg = dict(img_size=64, embed_dim=(16, 24, 32), key_dim=8, depth=(1, 2, 1), num_heads=(2, 3, 4), num_classes=5)
    torch.manual_seed(0)
    peer = (LevitDistilled if distilled else Levit)(**cfg)
    ours = LeViT(**cfg, distilled=distilled)
    assert timm is not None
    relative32, diff64 = vc.timm_parity_through_a_file(peer, ours, tmp_path, (3, 64, 64))
    assert relative32 <= 1e-4 and diff64 <= 1e-10, (relative32, diff64)  # fp64: same function


def test_attention_bias_index_is_relative_and_symmetric():
    idx = attention_bias_index((3, 4))
    assert idx.shape == (12, 12) and torch.equal(idx, idx.T) and idx.diagonal().eq(0).all()
    assert idx[0, 5] == idx[6, 11] == 1 * 4 + 1  # offset (1, 1) anywhere on the grid
    shrink = attention_bias_index((4, 4), stride=2)
    assert shrink.shape == (4, 16) and shrink[3, 10] == 0  # query (2, 2) sits on key (2, 2)


def test_explicit_attention_path_equals_the_fused_one():
    model = tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, maps = model.forward_with_attention(x)
        assert torch.allclose(logits, model(x), atol=1e-5)
    assert [m.shape[-2:] for m in maps] == [(64, 64), (16, 64), (16, 16), (4, 16), (4, 4)]


def test_training_loss_decreases_and_distilled_training_returns_both_heads():
    model = tiny()
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    losses = vc.training_losses(model, x, y, steps=10, lr=4e-3)
    assert losses[-1] < 0.6 * losses[0], losses
    model.set_distilled_training(True)
    cls_logits, dist_logits = model.train()(x)
    assert cls_logits.shape == dist_logits.shape == (8, 4)
    with torch.no_grad():
        mean = model.eval()(x)
        feats = model.forward_features(x).mean(dim=1)
    assert torch.allclose(mean, (model.head(feats) + model.head_dist(feats)) / 2, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = vc.checkpointing_gradients(tiny(), torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_batchnorm_folding_keeps_the_eval_function():
    model = tiny()
    pc.randomize_weights(model, 3)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        fused = model.fuse_batchnorm()
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
        assert (fused(x) - before).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match="eval"):
        tiny().train().fuse_batchnorm()


def test_optimizer_groups_use_no_weight_decay_and_layer_ids():
    from vitkit.optim import param_groups

    model = tiny()
    names = dict(model.named_parameters())
    assert model.no_weight_decay() and all(n.endswith("attention_biases") for n in model.no_weight_decay())
    assert model.layer_id("stem.conv1.linear.weight") == 0
    assert model.layer_id("stages.0.blocks.0.attn.qkv.linear.weight") == 1
    assert model.layer_id("stages.1.downsample.attn_downsample.kv.linear.weight") == 2
    assert model.layer_id("stages.1.blocks.0.mlp.ln1.linear.weight") == 3
    assert model.layer_id("head.linear.weight") == model.num_layers - 1 == 6
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.7)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    assert not decayed & model.no_weight_decay() and decayed
    assert sum(len(g["names"]) for g in groups) == len(names)


def test_reset_classifier_and_fine_tuning_load(tmp_path):
    source = tiny()
    vitkit.save_checkpoint(source, tmp_path / "src.safetensors")
    model = tiny(num_classes=3)
    report = vitkit.load_pretrained(model, tmp_path / "src.safetensors")
    assert report.clean and any(a.startswith("head_dist.linear") for a in report.adapted)
    model.reset_classifier(7)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_checkpoint_round_trip_and_onnx_export_with_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from vitkit.infer import export_model

    model = tiny().eval()
    pc.randomize_weights(model, 1)
    vitkit.save_checkpoint(model, tmp_path / "m.safetensors")
    again = vitkit.load_checkpoint(tmp_path / "m.safetensors").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    report = export_model(again, "onnx", tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4 and (tmp_path / "m.onnx").is_file()


def test_torch_compile_forward_and_backward():
    two_stages = tiny(embed_dim=(16, 24), depth=(1, 1), num_heads=(2, 3))  # a block and a shrink attention
    assert vc.compiled_matches_eager(two_stages, torch.randn(2, 3, 32, 32)) <= 1e-5


def test_wrong_input_size_is_named():
    with pytest.raises(ValueError, match="32, 32"):
        tiny()(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="stem stride"):
        LeViT(img_size=30, stem_stride=4)


def test_initial_batchnorm_scales_match_timm():
    """Residual branches start at zero (BN scale 0 after attention and MLP), shrink attention does not: as timm."""
    pytest.importorskip("timm")
    from timm.models.levit import LevitDistilled

    cfg = dict(img_size=64, embed_dim=(16, 24, 32), key_dim=8, depth=(1, 1, 1), num_heads=(2, 3, 4))
    ours, peer = LeViT(**cfg).state_dict(), LevitDistilled(**cfg).state_dict()
    scales = [k for k in ours if k.endswith("bn.weight")]
    assert scales and all(torch.equal(ours[k], peer[k]) for k in scales)


def test_planner_traces_levit_and_bounds_the_measured_step():
    from vitkit.plan.measure import measure_step
    from vitkit.plan.planner import PlanRequest, plan

    p = plan(PlanRequest(model="levit_128s_stem4_32", batch=8, precision="fp32", gpu="cpu:24", overrides=TINY))
    measured = measure_step(tiny(), 8, "train", "fp32", "adamw", device="cpu")
    assert p.params == sum(q.numel() for q in tiny().parameters())
    assert abs(p.flops_train_per_image * 8 / measured.flops - 1) < 0.02
    assert 1.0 <= p.memory.peak / measured.peak_bytes <= 1.35, (p.memory.peak, measured.peak_bytes)
    assert p.accelerators[0].fits and p.accelerators[0].max_micro_batch > 8
    with pytest.raises(ValueError, match="checkpointing"):
        plan(PlanRequest(model="levit_128s", grad_checkpointing=True))


def test_the_training_engine_trains_levit(tmp_path):
    from tests.helpers.train import tiny_config
    from vitkit.train import train

    summary = train(tiny_config(tmp_path, "model.name=levit_128s_stem4_32", "train.epochs=1", "train.grad_checkpointing=true",
                                "model.kwargs={embed_dim: [16, 24], key_dim: 8, depth: [1, 1], num_heads: [2, 3]}"))
    assert summary["steps"] == 4 and summary["test_acc1"] is not None


def test_timm_conv_layout_weights_load_into_the_linear_layout(tmp_path):
    """timm's levit_conv_* is the same network with 1x1 convolutions: its weights give the same logits here."""
    pytest.importorskip("timm")
    from timm.models.levit import LevitDistilled

    cfg = dict(img_size=64, embed_dim=(16, 24), key_dim=8, depth=(1, 1), num_heads=(2, 3), num_classes=5)
    torch.manual_seed(0)
    relative32, diff64 = vc.timm_parity_through_a_file(LevitDistilled(**cfg, use_conv=True), LeViT(**cfg), tmp_path,
                                         (3, 64, 64))
    assert relative32 <= 1e-4 and diff64 <= 1e-10, (relative32, diff64)  # fp64: same function

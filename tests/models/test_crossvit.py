"""CrossViT: timm layout, parameter counts and logits; training, checkpointing, export, the planner."""

import pytest
import torch

import tests.helpers.models as vc
import vitkit
from vitkit.models.crossvit import CrossViT

# 32 px: 4 px patches (8x8 grid, width 16) and 8 px patches (4x4 grid, width 24), two multi-scale blocks
TINY = dict(img_size=32, img_scale=(1.0, 1.0), patch_size=(4, 8), embed_dim=(16, 24), depth=((1, 1, 0), (1, 1, 0)),
            num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0), num_classes=4)
PARAMS = {  # timm 1.0
    "crossvit_tiny_240": 7014800, "crossvit_small_240": 26856272, "crossvit_base_240": 105025232,
    "crossvit_9_240": 8553296, "crossvit_15_240": 27528464, "crossvit_18_240": 43271408,
    "crossvit_9_dagger_240": 8776592, "crossvit_15_dagger_240": 28209008, "crossvit_18_dagger_240": 44266976,
    "crossvit_15_dagger_408": 28500080, "crossvit_18_dagger_408": 44606560,
}


def tiny(**extra) -> CrossViT:
    torch.manual_seed(0)
    return vitkit.create_model("crossvit_tiny_patch4_32", **{**TINY, **extra})


@pytest.mark.parametrize("name", list(PARAMS))
def test_registered_names_have_timms_layout_and_parameter_count(name):
    pytest.importorskip("timm")
    assert vc.timm_layout_and_parameter_count(name) == (PARAMS[name], PARAMS[name])


@pytest.mark.parametrize("case", ["resized_branch", "dagger", "two_fusion_blocks_gap"])
def test_timm_logit_parity_through_a_file(case, tmp_path):
    pytest.importorskip("timm")
    from timm.models.crossvit import CrossVit

    cfg = dict(img_size=48, img_scale=(1.0, 32 / 48), patch_size=(12, 16), embed_dim=(16, 32),
               depth=((1, 2, 0), (1, 1, 0)), num_heads=(2, 2), mlp_ratio=(2.0, 3.0, 1.0), num_classes=5)
    ours_extra = {}
    if case == "dagger":
        cfg["multi_conv"] = True
    if case == "two_fusion_blocks_gap":
        cfg.update(depth=((2, 1, 2),), global_pool="avg")
        ours_extra["pooling"] = "gap"
    torch.manual_seed(0)
    peer = CrossVit(**cfg)
    ours = CrossViT(**{k: v for k, v in cfg.items() if k != "global_pool"}, **ours_extra)
    relative32, diff64 = vc.timm_parity_through_a_file(peer, ours, tmp_path, (3, 48, 48))
    assert relative32 <= 1e-4 and diff64 <= 1e-10, (relative32, diff64)  # fp64: same function


def test_original_checkpoint_names_load(tmp_path):
    """IBM's checkpoints call the branch tokens pos_embed.0 / cls_token.1; timm renames them on load, so do we."""
    from safetensors.torch import save_file

    source = tiny()
    renamed = {k.replace("pos_embed_", "pos_embed.").replace("cls_token_", "cls_token."): v.contiguous()
               for k, v in source.state_dict().items()}
    save_file(renamed, str(tmp_path / "ibm.safetensors"))
    model = tiny(num_classes=4)
    torch.manual_seed(5)
    torch.nn.init.normal_(model.pos_embed_0)
    assert vitkit.load_pretrained(model, tmp_path / "ibm.safetensors", fmt="timm").clean
    assert torch.equal(model.pos_embed_0, source.pos_embed_0) and torch.equal(model.cls_token_1, source.cls_token_1)


def test_training_loss_decreases():
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    losses = vc.training_losses(tiny(depth=((1, 1, 0),)), x, y, steps=20, lr=4e-3)
    assert losses[-1] < 0.6 * losses[0], losses


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = vc.checkpointing_gradients(tiny(), torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_two_heads_are_averaged_and_pre_logits_concatenate_the_branches():
    model = tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert [f.shape for f in feats] == [(2, 65, 16), (2, 17, 24)]
        expected = (model.head[0](feats[0][:, 0]) + model.head[1](feats[1][:, 0])) / 2
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert model.forward_head(feats, pre_logits=True).shape == (2, 40)


def test_optimizer_groups_use_no_weight_decay_and_layer_ids():
    from vitkit.optim import param_groups

    model = tiny()
    assert model.no_weight_decay() == {"pos_embed_0", "pos_embed_1", "cls_token_0", "cls_token_1"}
    assert model.layer_id("patch_embed.1.proj.weight") == model.layer_id("cls_token_0") == 0
    assert model.layer_id("blocks.1.fusion.0.attn.wq.weight") == 2
    assert model.layer_id("head.1.weight") == model.num_layers - 1 == 3
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.7)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    assert decayed and not decayed & model.no_weight_decay()


def test_reset_classifier_and_fine_tuning_load(tmp_path):
    source = tiny()
    vitkit.save_checkpoint(source, tmp_path / "src.safetensors")
    model = tiny(num_classes=3)
    report = vitkit.load_pretrained(model, tmp_path / "src.safetensors")
    assert report.clean and sum(a.startswith("head.") for a in report.adapted) == 4
    model.reset_classifier(0)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 40)


def test_checkpoint_round_trip_and_onnx_export_with_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from vitkit.infer import export_model

    model = tiny(img_size=48, img_scale=(1.0, 32 / 48), patch_size=(12, 16)).eval()  # the bicubic resize exports too
    vitkit.save_checkpoint(model, tmp_path / "m.safetensors")
    again = vitkit.load_checkpoint(tmp_path / "m.safetensors").eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    report = export_model(again, "onnx", tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4


def test_torch_compile_forward_and_backward():
    assert vc.compiled_matches_eager(tiny(depth=((1, 1, 0),)), torch.randn(2, 3, 32, 32)) <= 1e-5


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="32, 32"):
        tiny()(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="patch sizes 12 and 16"):
        tiny(multi_conv=True)
    with pytest.raises(ValueError, match="each depth entry 3"):
        tiny(depth=((1, 1),))


def test_planner_traces_crossvit():
    """FLOPs as a real step counts them (the memory bound is checked against a measured step in the LeViT tests)."""
    from vitkit.plan.measure import count_step_flops
    from vitkit.plan.planner import PlanRequest, plan

    p = plan(PlanRequest(model="crossvit_tiny_patch4_32", batch=8, precision="fp32", gpu="cpu:24", overrides=TINY))
    assert abs(p.flops_train_per_image * 8 / count_step_flops(tiny(), 8) - 1) < 0.01
    assert p.params == sum(q.numel() for q in tiny().parameters()) and p.accelerators[0].max_micro_batch > 8
    infer = plan(PlanRequest(model="crossvit_tiny_patch4_32", batch=64, mode="infer", overrides=TINY))
    assert infer.memory.peak_phase == "forward" and infer.memory.weights == 2 * p.params  # bf16 weights


def test_the_training_engine_trains_crossvit(tmp_path):
    from tests.helpers.train import tiny_config
    from vitkit.train import train

    summary = train(tiny_config(tmp_path, "model.name=crossvit_tiny_patch4_32", "train.epochs=1",
                                "model.kwargs={embed_dim: [16, 24], depth: [[1, 1, 0]], num_heads: [2, 2]}"))
    assert summary["steps"] == 4 and summary["test_acc1"] is not None

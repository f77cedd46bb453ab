"""Every variant: forward shapes, training (loss decreases), gradient checkpointing, ONNX export parity, compile.

Tiny configurations (32 px, width 48, depth 2) keep the whole file to seconds. torch.compile uses the aot_eager
backend (Dynamo capture + AOTAutograd forward/backward graphs, no C++ code generation: inductor's compile alone takes
minutes on a shared 2-core CI machine); benchmarks/variants.py runs inductor.
"""

from __future__ import annotations

import pytest
import torch

import tests.helpers.models as vc
import vitkit

TINY = dict(img_size=32, embed_dim=48, depth=2, num_heads=3, num_classes=4)
VARIANTS = {
    "deit": ("deit_tiny_distilled_patch4_32", dict(patch_size=8)),
    "hybrid_conv": ("vit_hybrid_conv_tiny_32", dict(conv_channels=(16, 32))),
    "hybrid_resnet": ("vit_hybrid_rti_tiny_224", dict(layers=(1,), stem_width=32, patch_size=2)),
    "window": ("vit_tiny_window4_patch4_32", dict(patch_size=4, global_blocks=(1,))),
    "linear": ("vit_tiny_linear_patch4_32", dict(patch_size=8)),
    "rope": ("vit_tiny_rope_patch4_32", dict(patch_size=8, pos_embed="none")),
    "mix_ffn": ("vit_tiny_patch4_32", dict(patch_size=8, mlp_dwconv=True)),
}


def build(kind: str, **extra):
    name, kwargs = VARIANTS[kind]
    torch.manual_seed(0)
    return vitkit.create_model(name, **{**TINY, **kwargs, **extra})


@pytest.mark.parametrize("kind", VARIANTS)
def test_forward_shapes_and_training_loss_decreases(kind):
    model = build(kind, **({"depth": 1, "global_blocks": ()} if kind == "window" else {"depth": 1}))
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    assert model.eval()(x).shape == (8, 4)
    losses = vc.training_losses(model, x, y)
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("kind", VARIANTS)
def test_gradient_checkpointing_gives_the_same_gradients(kind):
    grads = vc.checkpointing_gradients(build(kind), torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


@pytest.mark.parametrize("kind", VARIANTS)
def test_onnx_export_parity(kind, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = build(kind).eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / f"{kind}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["images"], output_names=["logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(out) - model(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", ["deit", "hybrid_conv", "window"])  # one per family (window: the grid path)
def test_torch_compile_forward_and_backward(kind):
    torch._dynamo.reset()  # a fresh recompile budget: earlier tests compiled the same forward code objects
    model = build(kind, depth=1, **({"global_blocks": ()} if kind == "window" else {})).train()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    out = compiled(x)
    out.sum().backward()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_checkpoint_round_trip_of_each_new_arch(tmp_path):
    for kind in ("hybrid_conv", "hybrid_resnet", "window", "rope", "mix_ffn"):
        model = build(kind).eval()
        vitkit.save_checkpoint(model, tmp_path / f"{kind}.safetensors")
        again = vitkit.load_checkpoint(tmp_path / f"{kind}.safetensors").eval()
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(model(x), again(x)), kind


def test_window_model_needs_a_divisible_grid():
    with pytest.raises(ValueError, match="window_size 3"):
        build("window", window_size=3)(torch.randn(1, 3, 32, 32))

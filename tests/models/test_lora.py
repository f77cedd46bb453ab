"""LoRA through peft on vitkit models: what trains, what is saved, merging for export."""

import pytest
import torch

import vitkit
from tests.helpers.models import training_losses

pytest.importorskip("peft")
from vitkit.models.lora import (  # noqa: E402
    add_lora,
    load_adapters,
    lora_parameter_count,
    merge_lora,
    save_adapters,
    trainable_parameters,
)

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=4)


def _base(name="vit_tiny_patch4_32"):
    torch.manual_seed(0)
    return vitkit.create_model(name, **TINY)


def _train(model, steps=15):
    torch.manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    return training_losses(model, x, y, steps=steps, lr=1e-2), x


def test_only_adapters_and_head_train_and_the_loss_decreases():
    base = _base()
    frozen = {k: v.clone() for k, v in base.state_dict().items() if not k.startswith("head.")}
    model = add_lora(base, rank=4)
    trainable, total = trainable_parameters(model)
    assert trainable == lora_parameter_count(_base(), 4) < total / 5
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or ".head." in n for n in names) and not any("patch_embed" in n for n in names)
    losses, _ = _train(model)
    assert losses[-1] < 0.5 * losses[0]
    after = model.get_base_model().state_dict()
    for key, value in frozen.items():  # base weights untouched (peft renames wrapped ones to *.base_layer.*)
        key = key if key in after else key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(after[key], value), key


def test_saved_adapters_hold_only_adapters_and_reload_exactly(tmp_path):
    model = add_lora(_base(), rank=4)
    _, x = _train(model, steps=3)
    model.eval()
    path = save_adapters(model, tmp_path / "adapters")
    from safetensors.torch import load_file

    saved = load_file(str(path / "adapter_model.safetensors"))
    assert saved and all("lora_" in k or "head" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) == lora_parameter_count(_base(), 4)
    again = load_adapters(_base(), path).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), again(x), atol=1e-6)
    save_adapters(model, path)  # overwriting an existing folder works and leaves no temporaries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters"]


def test_merge_folds_adapters_into_a_plain_model_that_saves_and_exports(tmp_path):
    model = add_lora(_base("deit_tiny_distilled_patch4_32"), rank=4)
    _, x = _train(model, steps=3)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    merged = merge_lora(model).eval()
    assert type(merged).__name__ == "DistilledVisionTransformer"
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        assert torch.allclose(merged(x), expected, atol=1e-5)
    vitkit.save_checkpoint(merged, tmp_path / "merged.safetensors")
    with torch.no_grad():
        assert torch.allclose(vitkit.load_checkpoint(tmp_path / "merged.safetensors").eval()(x), expected, atol=1e-5)


def test_bad_target_names_the_linear_layers():
    with pytest.raises(ValueError, match="qkv"):
        add_lora(_base(), targets=("query",))

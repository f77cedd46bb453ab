"""The planner's FLOP closed forms, checked against torch's counter on real (tiny) steps."""

import pytest
import torch

import vitkit
from tests.helpers.plan import SMALL
from vitkit.models import VisionTransformer
from vitkit.plan.flops import ViTShape, closed_form_shape_of, counted_flops, model_summary, vit_flops


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_base_patch32_384", "vit_small_patch16_reg4_gap_256",
                                  "simplevit_small_patch16_224", "vit_huge_patch14_224",
                                  "deit_tiny_distilled_patch16_224"])
def test_forward_flops_equal_torch_counter(name):
    """The closed form that `vitkit models` and the planner use is the counter's figure, DeiT's second head included."""
    with torch.device("meta"):
        model = vitkit.create_model(name)
    shape = closed_form_shape_of(model)
    counted = counted_flops(model, (3, *shape.img_size), 1, "infer")
    assert vit_flops(shape, "infer")["total"] == counted
    assert model_summary(name)["gflops"] == counted / 1e9


@pytest.mark.parametrize("ckpt", [False, True])
def test_training_flops_equal_counter_on_a_real_step(ckpt):
    """A real CPU step runs the flash kernels; the counter needs vitkit's formulas for them (registered on import)."""
    torch.manual_seed(0)
    model = VisionTransformer(**SMALL)
    model.set_grad_checkpointing(ckpt)
    shape = ViTShape.from_config(model.config)
    assert vit_flops(shape, "train", ckpt)["total"] * 2 == counted_flops(model, (3, 64, 64), 2, "train")


@pytest.mark.parametrize("groups", [1, 4, 32])
def test_conv_backward_counts_groups(groups):
    """torch's own backward formula ignores groups; vitkit's: input and weight gradients each cost one forward."""
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, groups=groups)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    forward = 2 * 2 * 8 * 8 * 32 * (32 // groups) * 9
    assert counted_flops(conv, (32, 8, 8), 2, "infer") == forward
    assert counted_flops(conv, (32, 8, 8), 2, "train") == 2 * forward  # the weight grad (counted_flops' input: no grad)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward


def test_token_dropout_reduces_training_flops_only():
    shape = ViTShape.from_config(VisionTransformer(**SMALL).config, token_keep_rate=0.5)
    full = ViTShape.from_config(VisionTransformer(**SMALL).config)
    assert vit_flops(shape, "infer") == vit_flops(full, "infer")
    assert vit_flops(shape, "train")["blocks"] < 0.55 * vit_flops(full, "train")["blocks"]



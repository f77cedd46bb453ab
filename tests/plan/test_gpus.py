"""The accelerator table: cards and their tensor-core rates, loose name matching, CUDA device names."""

import pytest

from vitkit.plan.gpus import get_accelerator


def test_accelerator_table_has_the_cards_and_their_tensor_core_rates():
    from vitkit.plan.gpus import ACCELERATORS

    for card in ("T4", "V100-16GB", "V100-32GB", "RTX3060", "RTX3090", "RTX4090", "RTX5090", "A10", "A6000", "L4",
                 "L40S", "A100-40GB", "A100-80GB", "H100-PCIe", "H100-SXM", "H200"):
        acc = get_accelerator(card)
        assert acc.bandwidth_gbs > 0 and acc.source and acc.fp16_tflops >= acc.fp32_tflops
    rtx3090, t4 = get_accelerator("RTX3090"), get_accelerator("T4")
    assert rtx3090.peak_tflops("fp16") == 71.0 and rtx3090.peak_tflops("fp32") == 35.6  # FP32 accumulate, not FP32
    assert rtx3090.peak_tflops("bf16") > t4.peak_tflops("fp16")
    assert len(ACCELERATORS) >= 16


def test_accelerator_names_match_loosely_and_ambiguity_lists_the_cards():
    assert get_accelerator("rtx 3090").name == get_accelerator("RTX3090").name == "RTX3090-24GB"
    assert get_accelerator("a100-80gb").name == "A100-80GB" and get_accelerator("A10").name == "A10-24GB"
    assert get_accelerator("h100 sxm").name == "H100-SXM-80GB" and get_accelerator("L4").name == "L4-24GB"
    with pytest.raises(ValueError, match="ambiguous: A100-40GB, A100-80GB"):
        get_accelerator("A100")
    custom = get_accelerator("custom:mem_gb=24,tflops=71,bw_gbs=936")
    assert custom.memory_bytes == 24 * 2**30 and custom.peak_tflops("bf16") == 71 and custom.bandwidth_gbs == 936
    for bad in ("custom:mem_gb=24,tflops=71", "custom:mem_gb=24,tflops=71,bw_gbs=-1", "custom:watts=300"):
        with pytest.raises(ValueError, match="custom accelerator"):
            get_accelerator(bad)


def test_cuda_device_names_find_their_card():
    from vitkit.plan.gpus import accelerator_for_device

    gib = 2**30
    assert accelerator_for_device("NVIDIA H200", 140 * gib).name == "H200-141GB"
    assert accelerator_for_device("NVIDIA GeForce RTX 4090").name == "RTX4090-24GB"
    assert accelerator_for_device("NVIDIA A100-SXM4-80GB", 80 * gib).name == "A100-80GB"
    assert accelerator_for_device("NVIDIA H100 80GB HBM3", 80 * gib).name == "H100-SXM-80GB"
    assert accelerator_for_device("NVIDIA L40S", 45 * gib).name == "L40S-48GB"
    assert accelerator_for_device("Tesla T4").name == "T4-16GB"
    assert accelerator_for_device("NVIDIA B200") is None

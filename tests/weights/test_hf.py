"""Hugging Face ViT names: the export mapping is the inverse of the import table."""

from __future__ import annotations

import torch

from tests.helpers.infer import tiny_model
from vitkit.weights.hf import convert_hf, vitkit_to_hf_state


def test_hf_mapping_is_the_inverse_of_the_import_table():
    state = tiny_model().state_dict()
    hf_state = vitkit_to_hf_state(state)
    assert "vit.encoder.layer.1.attention.attention.query.weight" in hf_state
    assert hf_state["vit.encoder.layer.0.attention.attention.value.bias"].shape == (32,)
    back, unmatched = convert_hf(hf_state)
    assert unmatched == [] and back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)

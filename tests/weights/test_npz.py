"""Google's .npz layouts: big_vision's scanned (stacked) blocks load like the per-block layout."""

import torch

from tests.helpers.weights import tiny
from vitkit.weights import model_from_pretrained


def test_npz_big_vision_scanned_layout(tmp_path):
    """big_vision stores blocks stacked on a leading axis under Transformer/encoderblock/ and names subs _0/_1."""
    import numpy as np

    from vitkit.weights import save_npz

    source = tiny(num_classes=4)
    save_npz(source, tmp_path / "orig.npz")
    with np.load(tmp_path / "orig.npz") as data:
        arrays = dict(data)
    scanned = {}
    renames = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
               "MlpBlock_3": "MlpBlock_0"}
    for key, value in arrays.items():
        if key.startswith("Transformer/encoderblock_"):
            continue
        scanned["params/" + ("pos_embedding" if key.endswith("pos_embedding") else key)] = value
    for sub in {k.split("/", 2)[2] for k in arrays if k.startswith("Transformer/encoderblock_0/")}:
        new_sub = sub
        for old, new in renames.items():
            new_sub = new_sub.replace(old, new)
        stacked = np.stack([arrays[f"Transformer/encoderblock_{i}/{sub}"] for i in range(2)])
        scanned[f"params/Transformer/encoderblock/{new_sub}"] = stacked
    np.savez(tmp_path / "bv.npz", **scanned)
    model = model_from_pretrained(tmp_path / "bv.npz").eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), source(x))

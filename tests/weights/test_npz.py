"""Google's .npz checkpoints: both layouts (big_vision's scanned blocks too), Flax's tanh GELU, a Flax reference."""

import pytest
import torch

from tests.helpers.weights import tiny
from vitkit.weights import model_from_pretrained


def test_npz_big_vision_scanned_layout(tmp_path):
    """big_vision stores blocks stacked on a leading axis under Transformer/encoderblock/ and names subs _0/_1."""
    import numpy as np

    from vitkit.weights import save_npz

    source = tiny(num_classes=4, mlp_act="gelu_tanh")  # what Google's Flax models compute
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


def test_npz_source_round_trip_keeps_tanh_gelu(tmp_path):
    """save_npz -> model_from_pretrained is exact for a tanh-GELU model, and the import records the activation."""
    import vitkit
    from vitkit.weights import save_npz

    source = tiny(num_classes=4, mlp_act="gelu_tanh")
    save_npz(source, tmp_path / "g.npz")
    model = model_from_pretrained(tmp_path / "g.npz").eval()
    assert model.config["mlp_act"] == "gelu_tanh"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), source(x))
    reloaded = vitkit.load_checkpoint(vitkit.save_checkpoint(model, tmp_path / "g.safetensors")).eval()
    assert reloaded.config["mlp_act"] == "gelu_tanh" and torch.equal(reloaded(x), model(x))


def test_npz_logits_match_a_flax_model_built_from_flax_layers():
    """The committed reference (tests/helpers/flax_vit.py): Google's parameter names, flax's nn.gelu (tanh)."""
    import numpy as np

    from tests.helpers import flax_vit

    with np.load(flax_vit.LOGITS_FILE) as ref:
        images, logits = torch.from_numpy(ref["images"]), torch.from_numpy(ref["logits"])
    model = model_from_pretrained(flax_vit.WEIGHTS_FILE).eval()
    with torch.no_grad():
        ours = model(images)
        assert (ours - logits).abs().max().item() <= 1e-5
        # the reference can tell the two GELUs apart: the exact one misses it by far more than the tolerance
        exact = model_from_pretrained(flax_vit.WEIGHTS_FILE, mlp_act="gelu").eval()
        assert (exact(images) - logits).abs().max().item() > 1e-4


def test_flax_reference_file_is_what_flax_computes():
    """With jax and flax installed, recompute the committed logits from the committed .npz."""
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    import numpy as np

    from tests.helpers import flax_vit

    with np.load(flax_vit.WEIGHTS_FILE) as w, np.load(flax_vit.LOGITS_FILE) as ref:
        params = dict(w)
        recomputed = flax_vit.flax_logits(params, ref["images"])
        assert np.abs(recomputed - ref["logits"]).max() <= 1e-6


@pytest.mark.parametrize("fmt", ["hf", "onnx"])
def test_an_imported_npz_exports_with_its_tanh_gelu(fmt, tmp_path):
    """The activation is part of the config, so the exported model still matches the Flax reference."""
    import numpy as np

    from tests.helpers import flax_vit
    from vitkit.infer.export import export_model

    pytest.importorskip("transformers" if fmt == "hf" else "onnxruntime")
    with np.load(flax_vit.LOGITS_FILE) as ref:
        images, logits = ref["images"], ref["logits"]
    model = model_from_pretrained(flax_vit.WEIGHTS_FILE).eval()
    out = tmp_path / ("hf" if fmt == "hf" else "m.onnx")
    export_model(model, fmt, out)
    if fmt == "hf":
        from transformers import ViTForImageClassification

        peer = ViTForImageClassification.from_pretrained(out).eval()
        assert peer.config.hidden_act == "gelu_pytorch_tanh"
        with torch.no_grad():
            got = peer(pixel_values=torch.from_numpy(images)).logits.numpy()
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(out))
        got = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.abs(got - logits).max() <= 1e-5

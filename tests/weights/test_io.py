import os
import pickle

import pytest
import torch

import vitkit
from vitkit.models import VisionTransformer
from vitkit.utils.fileio import atomic_path
from vitkit.weights import WeightLoadError, load_pretrained, model_from_pretrained, read_state_dict

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)


def tiny(**kw):
    torch.manual_seed(0)
    return VisionTransformer(**{**TINY, **kw}).eval()


def test_checkpoint_round_trip_rebuilds_model_from_file_alone(tmp_path):
    model = tiny(reg_tokens=2, init_values=0.1)
    model.data_config = {"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}
    path = vitkit.save_checkpoint(model, tmp_path / "m.safetensors", metadata={"class_names": list("abcde")})
    loaded = vitkit.load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded.eval()(x))
    assert loaded.checkpoint_meta["extra"]["class_names"] == list("abcde")
    assert loaded.data_config["mean"] == [0.1, 0.2, 0.3]
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_checkpoint_of_compiled_model_saves_plain_keys(tmp_path):
    model = tiny()
    path = vitkit.save_checkpoint(torch.compile(model), tmp_path / "c.safetensors")
    assert set(read_state_dict(path)) == set(model.state_dict())


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        vitkit.load_checkpoint(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="no vitkit metadata"):
        vitkit.load_checkpoint(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        vitkit.load_checkpoint(tmp_path / "junk.safetensors")


def test_fine_tune_load_replaces_head_and_resamples_pos_embed(tmp_path):
    source = tiny()
    path = vitkit.save_checkpoint(source, tmp_path / "src.safetensors")
    model = VisionTransformer(**{**TINY, "num_classes": 7, "img_size": 48})
    report = load_pretrained(model, path)
    assert report.clean
    assert any("head.weight" in a for a in report.adapted) and any("pos_embed" in a for a in report.adapted)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 7)
    via_factory = model_from_pretrained(path, num_classes=3)
    assert via_factory.head.out_features == 3


def test_resampled_pos_embed_keeps_outputs_close_for_smooth_embeddings(tmp_path):
    source = tiny()
    with torch.no_grad():  # a smooth embedding, as training produces: resampling it is nearly lossless
        grid = torch.linspace(-1, 1, 4)
        smooth = (grid[:, None, None] * torch.linspace(0, 1, 48) + grid[None, :, None]).reshape(1, 16, 48)
        source.pos_embed[:, 1:] = smooth * 0.1
    path = vitkit.save_checkpoint(source, tmp_path / "s.safetensors")
    up = model_from_pretrained(path, img_size=64).eval()
    back = VisionTransformer(**TINY).eval()
    back.load_state_dict({**up.state_dict(), "pos_embed": vitkit.models.resample_pos_embed(up.pos_embed, (4, 4))})
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back(x), source(x), rtol=0, atol=5e-3)


def test_mismatch_is_an_error_listing_keys_or_a_warning_when_lenient(tmp_path):
    path = vitkit.save_checkpoint(tiny(), tmp_path / "a.safetensors")
    other = VisionTransformer(**{**TINY, "depth": 3, "qk_norm": True})
    with pytest.raises(WeightLoadError, match=r"missing from checkpoint .*blocks\.2\.norm1\.weight"):
        load_pretrained(other, path)
    with pytest.warns(UserWarning, match="blocks.0.attn.q_norm.weight"):
        report = load_pretrained(other, path, strict=False)
    assert "blocks.2.mlp.fc1.weight" in report.missing
    torch.testing.assert_close(other.blocks[0].mlp.fc1.weight, tiny().blocks[0].mlp.fc1.weight)
    wider = VisionTransformer(**{**TINY, "mlp_ratio": 2.0})
    with pytest.raises(WeightLoadError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint \(192, 48\) vs model \(96, 48\)"):
        load_pretrained(wider, path)


def test_timm_file_with_unknown_tensors_is_refused(tmp_path):
    sd = tiny().state_dict()
    sd["attn_pool.latent"] = torch.zeros(1, 1, 48)
    torch.save(sd, tmp_path / "map_head.pth")
    with pytest.raises(WeightLoadError, match="attn_pool.latent"):
        load_pretrained(tiny(), tmp_path / "map_head.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    with pytest.raises(ValueError, match="weights-only"):
        read_state_dict(path)


def test_unsupported_extension_and_missing_file(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unsupported weight file type '\.h5'"):
        read_state_dict(tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        vitkit.create_model("vit_tiny_patch16_224", pretrained=tmp_path / "missing.pth")


def test_timm_state_dict_needs_a_name(tmp_path):
    torch.save(tiny().state_dict(), tmp_path / "t.pth")
    with pytest.raises(ValueError, match="pass the registered model name"):
        model_from_pretrained(tmp_path / "t.pth")


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


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    with atomic_path(tmp_path / "g.bin") as tmp:
        tmp.write_bytes(b"new")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "g.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

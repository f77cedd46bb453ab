"""The vitkit checkpoint format and weight-file reading: round trips, plain keys, errors, no unpickling."""

import pickle

import pytest
import torch

import vitkit
from tests.helpers.weights import tiny
from vitkit.weights import read_state_dict


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


def test_metadata_that_claims_a_huge_model_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    import json

    from safetensors.torch import save_file

    from vitkit.weights import io

    model = tiny()
    path = vitkit.save_checkpoint(model, tmp_path / "m.safetensors")
    tensors = read_state_dict(path)
    with io.safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta["config"] = json.dumps({**json.loads(meta["config"]), "embed_dim": 16384, "depth": 64, "num_heads": 16})
    bomb = tmp_path / "bomb.safetensors"
    save_file({"cls_token": tensors["cls_token"]}, str(bomb), metadata=meta)  # a small file, a 200 B-param claim
    devices = []
    real_build = io.build_from_config

    def recording_build(arch, config):
        devices.append(torch.empty(0).device.type)  # "meta" inside check_config_matches_tensors
        return real_build(arch, config)

    monkeypatch.setattr(io, "build_from_config", recording_build)
    with pytest.raises(ValueError, match="bomb.safetensors: its metadata .* does not match its tensors"):
        vitkit.load_checkpoint(bomb)
    assert devices == ["meta"]  # only the shape-only skeleton was ever built
    assert vitkit.load_checkpoint(path) is not None and devices[-1] != "meta"  # a true file still loads

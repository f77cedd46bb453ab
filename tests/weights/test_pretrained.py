"""Building a model from a foreign weight file: what the file alone cannot tell is asked for."""

import pytest
import torch

import vitkit
from tests.helpers.weights import tiny
from vitkit.weights import model_from_pretrained


def test_timm_state_dict_needs_a_name(tmp_path):
    torch.save(tiny().state_dict(), tmp_path / "t.pth")
    with pytest.raises(ValueError, match="pass the registered model name"):
        model_from_pretrained(tmp_path / "t.pth")


@pytest.mark.parametrize("name, payload", [
    ("truncated.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1"),
    ("truncated.npz", b"PK\x03\x04 not a whole zip"),
    ("empty.npz", b""),
    ("truncated.pth", b"\x80\x02half a pickle"),
])
def test_a_corrupt_pretrained_file_is_one_error_naming_it(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(ValueError) as err:
        vitkit.create_model("vit_tiny_patch16_224", pretrained=path, num_classes=2, img_size=32)
    assert str(path) in str(err.value) and type(err.value) is ValueError

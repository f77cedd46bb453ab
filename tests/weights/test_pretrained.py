"""Building a model from a foreign weight file: what the file alone cannot tell is asked for."""

import pytest
import torch

from tests.helpers.weights import tiny
from vitkit.weights import model_from_pretrained


def test_timm_state_dict_needs_a_name(tmp_path):
    torch.save(tiny().state_dict(), tmp_path / "t.pth")
    with pytest.raises(ValueError, match="pass the registered model name"):
        model_from_pretrained(tmp_path / "t.pth")

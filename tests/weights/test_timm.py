"""timm state dicts: tensors the rules do not know are refused."""

import pytest
import torch

from tests.helpers.weights import tiny
from vitkit.weights import WeightLoadError, load_pretrained


def test_timm_file_with_unknown_tensors_is_refused(tmp_path):
    sd = tiny().state_dict()
    sd["attn_pool.latent"] = torch.zeros(1, 1, 48)
    torch.save(sd, tmp_path / "map_head.pth")
    with pytest.raises(WeightLoadError, match="attn_pool.latent"):
        load_pretrained(tiny(), tmp_path / "map_head.pth")

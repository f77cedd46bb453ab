"""Pretrained weights by name from a Hugging Face Hub cache, offline: timm repos, transformers repos, the errors.

Each repo is written by the peer's own saver (timm's ``save_for_hf``, transformers' ``save_pretrained``) from a
randomly initialised model and laid into a temporary cache as huggingface_hub lays it out; HF_HUB_OFFLINE=1 keeps
every test off the network. The peers themselves also load the same cache, which proves the layout is a real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from tests.helpers.hub import COMMIT, put_in_cache, use_offline_cache
from vitkit.weights import model_from_pretrained
from vitkit.weights.hub import HubRepoError, PretrainedNotCachedError, license_from_model_card, parse_hub_id
from vitkit.weights.parity import randomize_weights

TOL = 1e-5
TIMM_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # a real timm tag: its pretrained_cfg is timm's own
TIMM_REPO = f"timm/{TIMM_NAME}"
HF_REPO = "google/vit-tiny-test"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    return use_offline_cache(tmp_path, monkeypatch)


def _images(n: int = 2, size: int = 224) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _timm_repo(cache: Path, tmp_path: Path, safe: bool = True, depth: int = 2) -> torch.nn.Module:
    """A 2-block vit_tiny_patch16_224 saved by timm's save_for_hf into the cache as TIMM_REPO; returns the model."""
    timm = pytest.importorskip("timm")
    from timm.models._hub import save_for_hf

    peer = timm.create_model(TIMM_NAME, pretrained=False, depth=depth).eval()
    randomize_weights(peer, 0)
    folder = tmp_path / "timm_export"
    save_for_hf(peer, str(folder), safe_serialization=safe)
    put_in_cache(cache, TIMM_REPO, folder)
    return peer


def test_timm_tag_loads_from_the_cache_with_timms_logits(hub_cache, tmp_path):
    peer = _timm_repo(hub_cache, tmp_path)
    ours = vitkit.create_model(TIMM_NAME, pretrained=True).eval()
    assert ours.config["depth"] == 2  # the repo's model_args, read from its config.json
    x = _images()
    with torch.no_grad():
        assert (ours(x) - peer(x)).abs().max().item() <= TOL
    report = ours.load_report
    assert report.clean and report.head_replaced is None and report.license == "apache-2.0"
    assert report.source == f"{TIMM_REPO}/model.safetensors" and report.fmt == "timm"
    # the preprocessing of these weights is timm's pretrained_cfg for the tag, not vit_tiny's registry entry
    timm_cfg = peer.pretrained_cfg
    assert ours.data_config["mean"] == list(timm_cfg["mean"]) and ours.data_config["crop_pct"] == timm_cfg["crop_pct"]
    assert ours.data_config["interpolation"] == timm_cfg["interpolation"] == "bicubic"
    assert ours.data_config["input_size"] == [3, 224, 224]


def test_every_spelling_of_a_timm_repo_gives_the_same_weights(hub_cache, tmp_path):
    import timm

    _timm_repo(hub_cache, tmp_path)
    x = _images(1)
    spellings = [
        vitkit.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True),
        vitkit.create_model("vit_tiny_patch16_224", pretrained=TIMM_REPO, depth=2),
        vitkit.create_model("vit_tiny_patch16_224", pretrained=f"hf-hub:{TIMM_REPO}@main", depth=2),
        vitkit.create_model("vit_tiny_patch16_224", pretrained=TIMM_NAME, depth=2),
        vitkit.create_model("vit_tiny_patch16_224", pretrained="augreg_in21k_ft_in1k", depth=2),  # a bare tag
        model_from_pretrained(TIMM_REPO),
        model_from_pretrained(f"{TIMM_REPO}@{COMMIT}"),
    ]
    # timm itself reads the same cache: the layout is huggingface_hub's
    peer = timm.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True).eval()
    with torch.no_grad():
        ref = peer(x)
        for model in spellings:
            assert (model.eval()(x) - ref).abs().max().item() <= TOL


def test_fine_tuning_load_report_names_head_and_resampled_grid(hub_cache, tmp_path):
    _timm_repo(hub_cache, tmp_path)
    model = vitkit.create_model(TIMM_NAME, pretrained=True, num_classes=2, img_size=64)
    report = model.load_report
    assert report.head_replaced == (1000, 2)
    assert report.pos_embed_resampled == ((14, 14), (4, 4))
    assert model.data_config["input_size"] == [3, 64, 64]  # follows the model, the rest stays the repo's
    text = report.describe()
    for phrase in ("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "1000-class", "new 2-class head",
                   "14x14 to a 4x4", "License: apache-2.0"):
        assert phrase in text, text
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_pickle_only_repo_loads_weights_only(hub_cache, tmp_path):
    peer = _timm_repo(hub_cache, tmp_path, safe=False)
    snapshot = hub_cache / f"models--timm--{TIMM_NAME}" / "snapshots" / COMMIT
    assert not (snapshot / "model.safetensors").exists() and (snapshot / "pytorch_model.bin").exists()
    ours = vitkit.create_model(TIMM_NAME, pretrained=True).eval()
    assert ours.load_report.source.endswith("pytorch_model.bin")
    x = _images(1)
    with torch.no_grad():
        assert (ours(x) - peer(x)).abs().max().item() <= TOL


def test_pickle_with_objects_in_a_repo_is_refused(hub_cache, tmp_path):
    import pickle

    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "pretrained_cfg": {}}))
    with open(folder / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    put_in_cache(hub_cache, "someone/evil", folder)
    with pytest.raises(ValueError, match="will not unpickle"):
        vitkit.create_model("vit_tiny_patch16_224", pretrained="someone/evil")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _hf_repo(cache: Path, tmp_path: Path, readme: str | None = None):
    pytest.importorskip("transformers")
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = ["ant", "bee", "wasp"]
    cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
                    patch_size=8, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    peer = ViTForImageClassification(cfg).eval()
    randomize_weights(peer, 0)
    folder = tmp_path / "hf_export"
    peer.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, resample=3).save_pretrained(folder)
    if readme is not None:
        (folder / "README.md").write_text(readme)
    put_in_cache(cache, HF_REPO, folder)
    return peer, labels


def test_transformers_repo_builds_from_its_config_with_transformers_logits(hub_cache, tmp_path):
    from transformers import ViTForImageClassification

    peer, labels = _hf_repo(hub_cache, tmp_path, readme="---\nlicense: apache-2.0\ntags:\n- vision\n---\n# card\n")
    ours = model_from_pretrained(HF_REPO).eval()
    x = _images(2, 32)
    # transformers reads the same cache
    reloaded = ViTForImageClassification.from_pretrained(HF_REPO, cache_dir=hub_cache, local_files_only=True).eval()
    with torch.no_grad():
        ref = peer(pixel_values=x).logits
        assert (ours(x) - ref).abs().max().item() <= TOL
        assert (reloaded(pixel_values=x).logits - ref).abs().max().item() <= TOL
    assert ours.class_names == labels
    assert ours.config["norm_eps"] == 1e-12  # transformers' layer_norm_eps, as the repo's config says
    # ViTImageProcessor resizes to exactly 32x32 (no crop) with the resample code it stores (3 = bicubic)
    assert ours.data_config == {"input_size": [3, 32, 32], "interpolation": "bicubic", "crop_pct": 1.0,
                                "crop_mode": "squash", "mean": [0.5] * 3, "std": [0.5] * 3}
    report = ours.load_report
    assert report.license == "apache-2.0" and report.fmt == "hf" and report.converted > 0
    assert "keys were adapted from hf names" in report.describe()


def test_transformers_repo_into_a_registered_name_keeps_the_repos_function(hub_cache, tmp_path):
    peer, _ = _hf_repo(hub_cache, tmp_path)
    ours = vitkit.create_model("vit_tiny_patch16_224", pretrained=HF_REPO, embed_dim=64, depth=2, num_heads=4,
                               mlp_ratio=2.0, img_size=32, patch_size=8, num_classes=3).eval()
    x = _images(2, 32)
    with torch.no_grad():
        assert (ours(x) - peer(pixel_values=x).logits).abs().max().item() <= TOL
    assert ours.load_report.license is None and "License: not stated" in ours.load_report.describe()


def test_hub_name_without_pretrained_builds_the_architecture_only(hub_cache, tmp_path):
    _timm_repo(hub_cache, tmp_path)
    model = vitkit.create_model(f"hf-hub:{TIMM_REPO}", num_classes=3)
    assert not hasattr(model, "load_report") and model.config["depth"] == 2 and model.num_classes == 3
    assert model.data_config["crop_pct"] == 0.9


def test_not_cached_offline_is_one_error_naming_repo_file_cache_and_fix(hub_cache):
    with pytest.raises(PretrainedNotCachedError) as err:
        vitkit.create_model("vit_base_patch16_224.augreg2_in21k_ft_in1k", pretrained=True, num_classes=2)
    text = str(err.value)
    for part in ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "config.json", str(hub_cache), "HF_HUB_OFFLINE",
                 "run once online", "local weight file"):
        assert part in text, text
    assert isinstance(err.value, FileNotFoundError)  # the CLI's handler prints it as one error: line


def test_weights_missing_from_the_cache_name_the_weights_file(hub_cache, tmp_path):
    _timm_repo(hub_cache, tmp_path)
    snapshot = hub_cache / f"models--timm--{TIMM_NAME}" / "snapshots" / COMMIT
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(PretrainedNotCachedError, match=r"model\.safetensors is not in the Hugging Face cache"):
        vitkit.create_model(TIMM_NAME, pretrained=True)


def test_a_string_read_as_a_repo_says_so_when_not_found(hub_cache):
    with pytest.raises(FileNotFoundError, match="read as a hub repo: no local file or folder"):
        vitkit.create_model("vit_tiny_patch16_224", pretrained="runs/exp1")
    with pytest.raises(FileNotFoundError, match="weights not found: .*nope.safetensors"):
        vitkit.create_model("vit_tiny_patch16_224", pretrained="runs/nope.safetensors")  # a file name stays local


def test_pretrained_true_needs_a_tag_and_says_timms_default():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"needs a pretrained tag.*'vit_base_patch16_224\.augreg2_in21k_ft_in1k'"):
        vitkit.create_model("vit_base_patch16_224", pretrained=True)


def test_unknown_architecture_in_a_tagged_name_names_close_matches():
    with pytest.raises(ValueError, match="closest registered names: vit_base_patch16_224"):
        vitkit.create_model("vit_base_patch16_244.augreg_in21k", pretrained=True)


def test_config_of_unknown_kind_is_refused(hub_cache, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hello": 1}))
    put_in_cache(hub_cache, "someone/odd", folder)
    with pytest.raises(HubRepoError, match="neither timm's .* nor transformers'"):
        model_from_pretrained("someone/odd")


def test_hub_ids_and_model_cards():
    assert parse_hub_id("hf-hub:timm/a.b@v1.0").repo_id == "timm/a.b"
    assert parse_hub_id("timm/a.b@v1.0").revision == "v1.0"
    with pytest.raises(ValueError, match="not a Hugging Face Hub repo id"):
        parse_hub_id("hf-hub:no_namespace")
    assert license_from_model_card("---\nlicense: mit\n---\ntext") == "mit"
    assert license_from_model_card("---\nlicense: other\nlicense_name: custom-1\n---\n") == "custom-1"
    assert license_from_model_card("# no front matter\nlicense: mit") is None


def test_hf_home_and_offline_from_the_environment_alone(hub_cache, tmp_path):
    """A fresh process sees only HF_HOME and HF_HUB_OFFLINE (as a user sets them) and loads from that cache."""
    peer = _timm_repo(hub_cache, tmp_path)
    x = _images(1)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(peer(x), tmp_path / "ref.pt")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_CACHE"}  # HF_HOME/hub is the cache
    code = (f"import torch, vitkit; m = vitkit.create_model({TIMM_NAME!r}, pretrained=True).eval(); "
            f"x = torch.load({str(tmp_path / 'x.pt')!r}); ref = torch.load({str(tmp_path / 'ref.pt')!r}); "
            "print((m(x) - ref).abs().max().item())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) <= TOL


def test_training_from_a_repo_not_in_the_cache_fails_before_decoding_any_data(hub_cache, tmp_path, capsys):
    """`vitkit train --pretrained <timm name>` offline: the one not-cached error line, exit 2, and no image of the
    data folder decoded first (no cache entry made, no progress bar)."""
    from PIL import Image

    from vitkit.cli import main

    for name in ("ants", "bees"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (80, 60), (40 * i, 90, 30)).save(tmp_path / "photos" / name / f"{i}.jpg")
    cache = tmp_path / "vitkit_cache"
    code = main(["train", "--data", str(tmp_path / "photos"), "--model", "vit_tiny_patch16_224",
                 "--pretrained", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "--out-dir", str(tmp_path / "runs"),
                 "--set", f"data.cache_dir={cache}", "--set", "log.progress=none"])
    err = capsys.readouterr().err
    assert code == 2 and "error: timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k: config.json is not in" in err
    assert "decoding" not in err and not cache.exists()
    assert main(["train", "--data", str(tmp_path / "photos"), "--pretrained", str(tmp_path / "nope.safetensors"),
                 "--set", f"data.cache_dir={cache}"]) == 2
    assert "weights not found: " in capsys.readouterr().err and not cache.exists()

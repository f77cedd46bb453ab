"""The training config: YAML recipes, --set overrides, and errors that name the key and what it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vitkit.train.config import Config, ConfigError, config_from_dict, load_config, parse_override

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_embedded_default_is_digits_recipe():
    """recipes/digits.yaml documents the embedded default: they must not drift apart."""
    assert load_config(RECIPES / "digits.yaml").to_dict() == Config().validate().to_dict()


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads_and_has_a_header(recipe):
    header = recipe.read_text().splitlines()[:12]
    for word in ("purpose", "expected", "source"):
        assert any(word in line.lower() for line in header if line.startswith("#")), f"{recipe.name} lacks {word}"
    load_config(recipe)


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=1e-3", "train.epochs=50", "optim.betas=[0.9, 0.95]", "train.ema=true",
                             "model.kwargs.depth=2", "optim.clip_grad_norm=null", "data.name=cifar10"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 50 and cfg.train.ema is True
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.model.kwargs == {"depth": 2}
    assert cfg.optim.clip_grad_norm is None
    assert parse_override("data.root=/a/b=c") == ("data.root", "/a/b=c")


def test_yaml_round_trip():
    cfg = load_config(None, ["optim.lr=3e-4", "model.kwargs.depth=3"])
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize(
    "override, must_name",
    [
        ("optim.lrr=1", ["optim.lrr", "lr", "weight_decay", "layer_decay"]),  # unknown key: lists the allowed keys
        ("optimiser.lr=1", ["optimiser", "model", "optim", "schedule", "dist"]),  # unknown section: lists sections
        ("train.precision=fp8", ["train.precision", "'fp32'", "'bf16'", "'fp16'"]),  # bad choice: lists choices
        ("train.epochs=ten", ["train.epochs", "int", "ten"]),  # bad type: names type and value
        ("optim.lr=-1", ["optim.lr", "> 0"]),  # bad range
        ("train.accum_steps=0", ["train.accum_steps", ">= 1"]),
        ("optim.betas=[0.9]", ["optim.betas", "2 numbers"]),
        ("model.kwargs=[1]", ["model.kwargs", "mapping"]),
        ("model.kwargs.num_classes=3", ["model.kwargs", "num_classes"]),
        ("train.ema=maybe", ["train.ema", "bool"]),
        ("optim=3", ["optim", "names a section"]),
        ("optim.lr", ["section.key=value"]),
    ],
)
def test_config_errors_name_the_key(override, must_name):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for text in must_name:
        assert text in str(err.value), (text, str(err.value))


def test_recipe_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-3\ntrian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'trian'.*sections: model, data"):
        load_config(bad)
    bad.write_text("schedule:\n  name: linear\n")
    with pytest.raises(ConfigError, match=r"schedule\.name.*'cosine' \| 'constant' \| 'step'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(tmp_path / "missing.yaml")


def test_per_sample_options_need_the_per_sample_pipeline():
    with pytest.raises(ConfigError, match="data.auto_augment needs data.pipeline=per_sample"):
        load_config(None, ["data.auto_augment=randaugment"])
    assert load_config(None, ["data.pipeline=per_sample", "data.auto_augment=randaugment"]).data.auto_augment

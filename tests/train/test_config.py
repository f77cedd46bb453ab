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


@pytest.mark.parametrize(
    "override, must_name",
    [
        ("model.kwargs.bogus=1", ["model.kwargs", "bogus"]),
        ("model.kwargs.dpeth=2", ["model.kwargs", "dpeth", "depth"]),  # a typo: the closest argument
        ("model.kwargs.depth=-1", ["model.kwargs", "depth", "-1"]),  # today this builds a model with no blocks
        ("model.kwargs.depth=0", ["model.kwargs", "depth"]),
        ("model.kwargs.num_heads=0", ["model.kwargs", "num_heads"]),
        ("model.kwargs.embed_dim=[]", ["model.kwargs", "embed_dim"]),
        ("model.kwargs.mlp_ratio=0", ["model.kwargs", "mlp_ratio"]),
    ],
)
def test_model_kwargs_are_checked_against_the_architecture(override, must_name):
    """Before any data is decoded: an argument the architecture does not take, or a size it cannot build."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for text in must_name:
        assert text in str(err.value), (text, str(err.value))


def test_model_kwargs_of_other_architectures_pass():
    """**kwargs constructors (DeiT, the hybrids) are followed to the class that takes the arguments; CrossViT's depth
    triples may hold a 0 (no fusion blocks)."""
    assert load_config(None, ["model.name=deit_tiny_patch16_224", "model.kwargs.depth=2"]).model.kwargs == {"depth": 2}
    load_config(None, ["model.name=vit_hybrid_conv_tiny_32", "model.kwargs={conv_channels: [16, 32], depth: 1}"])
    load_config(None, ["model.name=crossvit_tiny_patch4_32", "model.kwargs.depth=[[1, 1, 0]]"])
    with pytest.raises(ConfigError, match="conv_chanels"):
        load_config(None, ["model.name=vit_hybrid_conv_tiny_32", "model.kwargs.conv_chanels=[16, 32]"])


# --- properties: whatever text a user types, the parser and the loader answer with a value or a ConfigError -----

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vitkit.train.config import SECTIONS, _section_fields  # noqa: E402

ALL_KEYS = sorted(f"{section}.{key}" for section in SECTIONS for key in _section_fields(section))
PROPERTY = settings(max_examples=300, deadline=None)
#: text made of what YAML gives meaning to, so the generated overrides reach its tags, anchors, dates and flows
YAMLISH = st.text(alphabet="0123456789-+:.eE!&*[]{},'\" abcflnorstuxyTZ_%|>#@`~", max_size=30)
KEY_TEXT = st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True)
SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=False, allow_infinity=False, width=64)
           | st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3), max_leaves=8)


@PROPERTY
@given(key=KEY_TEXT, value=VALUES)
def test_an_override_reads_back_the_value_written_as_yaml(key, value):
    """``key=<value as YAML>`` parses to exactly (key, value): the --set parser is YAML's reader, nothing else."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True).strip()
    text = text.removesuffix("...").strip()  # safe_dump ends a bare scalar with a document-end marker
    if text.startswith("?"):  # a complex mapping key: not something a shell user writes
        return
    assert parse_override(f"{key}={text}") == (key, value)


@PROPERTY
@given(text=st.text(max_size=60) | YAMLISH.map(lambda raw: f"data.name={raw}"))
def test_any_override_text_parses_or_is_a_config_error(text):
    try:
        key, _ = parse_override(text)
    except ConfigError:
        assert "=" not in text
        return
    assert isinstance(key, str) and "=" in text


@PROPERTY
@given(key=st.sampled_from(ALL_KEYS) | KEY_TEXT, raw=st.text(max_size=40) | YAMLISH | VALUES.map(
    lambda v: yaml.safe_dump(v, default_flow_style=True).removesuffix("...\n").strip()))
def test_any_override_loads_or_is_a_config_error(key, raw):
    """A real key (or a made-up one) with any value: the loader returns a validated Config or a ConfigError that
    names the section or key; never a TypeError or another exception from deep inside."""
    try:
        cfg = load_config(None, [f"{key}={raw}"])
    except ConfigError as err:
        assert key.split(".")[0] in str(err) or "model" in str(err) or "data" in str(err), str(err)
        return
    assert config_from_dict(yaml.safe_load(cfg.to_yaml())).to_dict() == cfg.to_dict()


@PROPERTY
@given(mapping=st.dictionaries(st.sampled_from([*SECTIONS, "trian"]), st.dictionaries(
    st.sampled_from(sorted({k.split(".")[1] for k in ALL_KEYS})), VALUES, max_size=3) | VALUES, max_size=3))
def test_any_recipe_loads_or_is_a_config_error(mapping, tmp_path_factory):
    recipe = tmp_path_factory.mktemp("recipe") / "r.yaml"
    recipe.write_text(yaml.safe_dump(mapping))
    try:
        cfg = load_config(recipe)
    except ConfigError:
        return
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("raw", ["2026-13-01", "2001-12-14t21:59:43.10-99:00", "!!float abc", "!!int x"])
def test_values_yaml_cannot_construct_stay_text(raw):
    """Found by the properties above: YAML's date and tag constructors raised ValueError (an error line without
    the key). A date is a name's text, a tag that does not convert is text too; the field's type then decides."""
    assert parse_override(f"checkpoint.run_name={raw}") == ("checkpoint.run_name", raw)
    assert load_config(None, [f"checkpoint.run_name={raw}"]).checkpoint.run_name == raw
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, [f"train.epochs={raw}"])


def test_a_value_that_refers_to_itself_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.kwargs.depth.*refers to itself"):
        load_config(None, ["model.kwargs.depth=&a [*a]"])
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("data:\n  kwargs: &a {inner: *a}\n")
    with pytest.raises(ConfigError, match="loop.yaml.*refers to itself"):
        load_config(recipe)

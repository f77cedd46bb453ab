"""Every recipe in recipes/ loads and documents itself; the ImageNet-scale and fine-tuning recipes also train.

The training smoke test keeps each recipe's own data pipeline, augmentation, optimizer and schedule and shrinks only
what makes it big (model width/depth, image size, batch, steps, the dataset: a tiny generated ImageFolder), so it
checks that the recipe as written builds and runs, not a simplified copy of it. New recipes join automatically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import vitkit
from vitkit.train import load_config, train
from vitkit.train.config import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL = sorted(p.name for p in RECIPES.glob("*.yaml"))
TRAINED = sorted(n for n in ALL if n.startswith(("imagenet-", "finetune-")))
# Extra overrides a recipe needs to run tiny on a CPU beyond the common ones (recipe file name -> list of key=value).
EXTRA_OVERRIDES: dict[str, list[str]] = {
    # 128 -> 224 px becomes 16 -> 32 px (multiples of the stem's stride 16); two epochs so the two steps see both
    # sizes (at 16 px four loader batches join into one step); the clock is left out of a 2-step run
    "imagenet-1gpu-24h.yaml": ["data.size_schedule=[[0, 16], [0.5, 32]]", "train.epochs=2", "train.time_budget_s=null"],
}


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def test_recipes_found():
    assert {"imagenet-vit-s16-90ep.yaml", "finetune-vit-b16.yaml", "cifar10-gpu.yaml"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_recipe_loads_and_names_a_registered_model(name):  # the header is checked in test_config.py
    cfg = load_config(RECIPES / name)
    assert cfg.model.name in vitkit.list_models(), f"{name}: unknown model {cfg.model.name}"


def make_folder(root: Path, size: tuple[int, int] = (40, 48)) -> Path:
    """root/{train,val}/{a,b}: 4 + 1 noisy JPEGs per class, each class with its own mean colour."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 1)):
        for c, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(60 + 120 * c, 40, (*size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


TINY_MODEL = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_overrides(data: Path, tmp: Path) -> list[str]:
    return [
        f"data.name={data}", f"data.cache_dir={tmp / 'cache'}", "data.img_size=32", "data.batch_size=2",
        "data.eval_batch_size=4", "data.num_workers=0",
        *(f"model.kwargs.{k}={v}" for k, v in TINY_MODEL.items()),
        "train.epochs=1", "train.max_steps=2", "train.compile=false", "train.device=cpu", "train.threads=1",
        f"checkpoint.out_dir={tmp / 'runs'}", "checkpoint.every_steps=null", "log.progress=none",
        "log.tensorboard=false", "log.curves=false", "log.every_steps=1",
    ]


def tiny_pretrained(model_name: str, path: Path) -> Path:
    """A 'pretrained' checkpoint of the recipe's architecture at tiny width, ImageNet head and native size: loading
    it for 2 classes at 32 px is a real fine-tuning load (new head, resampled position embedding)."""
    vitkit.save_checkpoint(vitkit.create_model(model_name, **TINY_MODEL), path)
    return path


@pytest.mark.parametrize("name", TRAINED)
def test_recipe_trains_on_a_tiny_image_folder(name, tmp_path, monkeypatch):
    import vitkit.data.transforms as transforms

    built = []

    def recording(*args, **kwargs):  # the per-image pipeline the engine asks for, to check it is the recipe's
        built.append(kwargs)
        return original(*args, **kwargs)

    original = transforms.build_train_transform
    monkeypatch.setattr(transforms, "build_train_transform", recording)
    recipe = load_config(RECIPES / name)
    overrides = tiny_overrides(make_folder(tmp_path / "data"), tmp_path) + EXTRA_OVERRIDES.get(name, [])
    if recipe.model.pretrained:
        overrides.append(f"model.pretrained={tiny_pretrained(recipe.model.name, tmp_path / 'pre.safetensors')}")
    cfg = load_config(RECIPES / name, overrides)
    # only size/length/place keys were overridden: augmentation, optimizer and schedule are the recipe's own
    changed = {o.split("=", 1)[0] for o in overrides}
    for section in ("data", "optim", "schedule"):
        for key, value in yaml.safe_load((RECIPES / name).read_text())[section].items():
            if f"{section}.{key}" not in changed:
                got = getattr(getattr(cfg, section), key)
                assert _plain(got) == value, f"{section}.{key}"

    summary = train(cfg)

    assert summary["steps"] == 2
    assert math.isfinite(summary["test_loss"]) and summary["test_images"] == 2
    if recipe.data.pipeline == "per_sample":
        assert built, "the per-sample training pipeline was not built"
        assert built[0]["scale"] == (recipe.data.scale_min, 1.0)
        assert built[0]["auto_augment"] == recipe.data.auto_augment
        assert (built[0]["num_ops"], built[0]["magnitude"]) == (recipe.data.randaugment_num_ops,
                                                                recipe.data.randaugment_magnitude)


def test_imagenet_recipe_is_the_papers_setting():
    """The numbers of "Better plain ViT baselines" (with big_vision's decoupled wd translated for torch's AdamW)."""
    cfg = load_config(RECIPES / "imagenet-vit-s16-90ep.yaml")
    model = vitkit.create_model(cfg.model.name)
    assert (model.pooling, model.pos_embed_kind, model.embed_dim, model.patch_size) == ("gap", "sincos2d", 384, 16)
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.schedule.warmup_steps, cfg.optim.clip_grad_norm) == \
        (1024, 1e-3, 10_000, 1.0)
    assert cfg.optim.lr * cfg.optim.weight_decay == pytest.approx(1e-4)  # big_vision wd=1e-4 is not scaled by lr
    assert (cfg.data.randaugment_num_ops, cfg.data.randaugment_magnitude, cfg.data.mixup_alpha) == (2, 10, 0.2)
    assert (cfg.data.scale_min, cfg.train.epochs) == (0.05, 90)


@pytest.mark.parametrize("override", ["data.randaugment_magnitude=31", "data.randaugment_num_ops=0"])
def test_randaugment_keys_are_checked(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(None, [override])

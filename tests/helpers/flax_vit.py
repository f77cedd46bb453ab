"""A small Google ViT in Flax, from flax's own layers under Google's parameter names: the reference for .npz imports.

The module tree is that of google-research/vision_transformer (``embedding``, ``cls``, ``Transformer/posembed_input``,
``encoderblock_<i>/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}``, ``encoder_norm``,
``head``) and its MLP calls ``flax.linen.gelu`` as Google's does, so its logits are what Google's code computes for an
.npz. Run once (needs jax and flax: ``pip install -e .[flax]``) to write the committed reference that
tests/weights/test_npz.py reads:

    .venv/bin/python tests/helpers/flax_vit.py            # writes tests/weights/data/flax_vit_tiny*.npz

The test also recomputes the logits with this module when jax and flax are importable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "weights" / "data"
WEIGHTS_FILE = DATA / "flax_vit_tiny.npz"  # Google's .npz layout, flattened with "/" as Google's checkpoints are
LOGITS_FILE = DATA / "flax_vit_tiny_logits.npz"  # the inputs (N, C, H, W) and the Flax model's logits
CONFIG = dict(img_size=16, patch_size=4, in_chans=3, hidden=32, depth=2, heads=4, mlp_dim=64, num_classes=5)
SEED = 0


def build_flax_vit(cfg: dict = CONFIG):
    """The Flax module (imports jax/flax here, so the test suite runs without them)."""
    import flax.linen as nn
    import jax.numpy as jnp

    class MlpBlock(nn.Module):
        mlp_dim: int

        @nn.compact
        def __call__(self, x):
            y = nn.Dense(self.mlp_dim, name="Dense_0")(x)
            y = nn.gelu(y)  # Google's MlpBlock: flax's default GELU, the tanh approximation
            return nn.Dense(x.shape[-1], name="Dense_1")(y)

    class Encoder1DBlock(nn.Module):
        heads: int
        mlp_dim: int

        @nn.compact
        def __call__(self, inputs):
            x = nn.LayerNorm(name="LayerNorm_0")(inputs)
            x = nn.MultiHeadDotProductAttention(num_heads=self.heads, name="MultiHeadDotProductAttention_1")(x, x)
            x = x + inputs
            y = nn.LayerNorm(name="LayerNorm_2")(x)
            return x + MlpBlock(self.mlp_dim, name="MlpBlock_3")(y)

    class PosEmbed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))

    class Encoder(nn.Module):
        depth: int
        heads: int
        mlp_dim: int

        @nn.compact
        def __call__(self, x):
            x = PosEmbed(name="posembed_input")(x)
            for i in range(self.depth):
                x = Encoder1DBlock(self.heads, self.mlp_dim, name=f"encoderblock_{i}")(x)
            return nn.LayerNorm(name="encoder_norm")(x)

    class VisionTransformer(nn.Module):
        @nn.compact
        def __call__(self, images):  # NHWC, as Google's models take them
            p = cfg["patch_size"]
            x = nn.Conv(cfg["hidden"], (p, p), strides=(p, p), padding="VALID", name="embedding")(images)
            n, h, w, c = x.shape
            x = x.reshape(n, h * w, c)
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
            x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)
            x = Encoder(cfg["depth"], cfg["heads"], cfg["mlp_dim"], name="Transformer")(x)
            return nn.Dense(cfg["num_classes"], name="head")(x[:, 0])

    return VisionTransformer()


def random_params(cfg: dict = CONFIG, seed: int = SEED) -> dict[str, np.ndarray]:
    """Flax-initialised shapes, then random values everywhere (norm scales around 1) in Google's flat layout.

    Dense kernels are drawn large enough that pre-activations reach |x| ~ 1-3, where the tanh GELU and the exact
    one differ by ~1e-3: a model computing the wrong GELU cannot pass a 1e-5 tolerance.
    """
    import jax
    from flax import traverse_util

    model = build_flax_vit(cfg)
    shape = (1, cfg["img_size"], cfg["img_size"], cfg["in_chans"])
    variables = model.init(jax.random.PRNGKey(seed), np.zeros(shape, np.float32))
    flat = traverse_util.flatten_dict(jax.device_get(variables["params"]), sep="/")
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in sorted(flat.items()):
        scale = 0.3 if key.endswith("kernel") else 0.1
        noise = rng.standard_normal(value.shape).astype(np.float32) * scale
        out[key] = (noise + 1.0 if key.endswith("scale") else noise).astype(np.float32)
    return out


def flax_logits(params: dict[str, np.ndarray], images_nchw: np.ndarray, cfg: dict = CONFIG) -> np.ndarray:
    """The Flax model's logits for float32 NCHW images under Google-layout parameters."""
    import jax
    from flax import traverse_util

    model = build_flax_vit(cfg)
    tree = traverse_util.unflatten_dict({k: jax.numpy.asarray(v) for k, v in params.items()}, sep="/")
    with jax.default_matmul_precision("float32"):
        logits = model.apply({"params": tree}, np.transpose(images_nchw, (0, 2, 3, 1)))
    return np.asarray(jax.device_get(logits), dtype=np.float32)


def write_reference(weights_file: Path = WEIGHTS_FILE, logits_file: Path = LOGITS_FILE) -> None:
    params = random_params()
    images = np.random.default_rng(SEED + 1).standard_normal(
        (4, CONFIG["in_chans"], CONFIG["img_size"], CONFIG["img_size"])).astype(np.float32)
    weights_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(weights_file, **params)
    np.savez(logits_file, images=images, logits=flax_logits(params, images))


if __name__ == "__main__":
    write_reference()
    print(f"wrote {WEIGHTS_FILE} and {LOGITS_FILE}", file=sys.stderr)

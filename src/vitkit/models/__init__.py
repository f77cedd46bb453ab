"""Model architectures and the registry of named configurations.

Importing the package imports every architecture module, and each one registers its class and its named
configurations, so ``create_model(name)`` and ``build_from_config(arch, ...)`` see them all.
"""

from . import crossvit, deit, hybrid, levit, navit, vit  # noqa: F401  (each registers itself)
from .contract import VitkitModel
from .layers import Attention, Block, PatchEmbed, resample_pos_embed, sincos_2d_pos_embed
from .registry import create_model, get_model_spec, list_models, register_arch, register_model
from .vit import VisionTransformer

__all__ = [
    "Attention", "Block", "PatchEmbed", "resample_pos_embed", "sincos_2d_pos_embed", "VitkitModel",
    "create_model", "get_model_spec", "list_models", "register_arch", "register_model", "VisionTransformer",
]

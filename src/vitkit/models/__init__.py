"""Model architectures and the registry of named configurations."""

from .layers import Attention, Block, PatchEmbed, resample_pos_embed, sincos_2d_pos_embed
from .registry import create_model, get_model_spec, list_models, register_arch, register_model
from .vit import VisionTransformer

__all__ = [
    "Attention", "Block", "PatchEmbed", "resample_pos_embed", "sincos_2d_pos_embed",
    "create_model", "get_model_spec", "list_models", "register_arch", "register_model", "VisionTransformer",
]

"""Pictures of a ViT: attention maps (rollout and per head), position-embedding similarity, patch filters, and the
HTML report every training run writes. Figures are drawn with matplotlib's Agg canvas, headless."""

from .attention import HEAD_FUSIONS, AttentionMaps, attention_maps, attention_rollout, fuse_heads, plot_attention
from .embeddings import filter_components, plot_filter_components, plot_position_similarity, position_similarity

__all__ = [
    "HEAD_FUSIONS", "AttentionMaps", "attention_maps", "attention_rollout", "fuse_heads", "plot_attention",
    "position_similarity", "plot_position_similarity", "filter_components", "plot_filter_components",
]

"""The model contract: what the trainer, the optimizer, the checkpoint format, inference, the planner and the
visualisations rely on in a vitkit model, written down once.

Every architecture in ``vitkit.models`` inherits :class:`VitkitModel`. Code that accepts any ``nn.Module`` (a
user's own model) asks ``isinstance(model, VitkitModel)`` once and otherwise relies on these names; a user module
may also subclass ``VitkitModel`` to be trained, saved and planned like a built-in one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class VitkitModel(nn.Module):
    """Base class of every vitkit architecture.

    Attributes:
        arch: the registry key of the class (``ARCHS[arch]`` rebuilds it; set by each architecture).
        config: the constructor arguments, JSON-able: ``build_from_config(arch, config)`` rebuilds the model.
        num_classes: outputs of the classifier; 0 means no head (``forward`` returns pooled features).
        num_features: width of the pooled features the head reads.
        model_name: the registered name ``create_model`` built it from; "" for a model built from its class.
        data_config: the input normalisation it expects, ``{"mean", "std", "crop_pct"}``; {} when unknown.
        grad_checkpointing: the forward recomputes block activations in backward (set_grad_checkpointing).
    """

    arch: ClassVar[str]
    config: dict[str, Any]
    num_classes: int
    num_features: int

    def __init__(self) -> None:
        super().__init__()
        self.model_name = ""
        self.data_config: dict[str, Any] = {}
        self.grad_checkpointing = False

    # --- optimizer: weight decay and layer-wise lr decay --------------------------------------------------------

    def no_weight_decay(self) -> set[str]:
        """Parameter names never decayed beyond norms and biases (the optimizer finds those from their shape):
        position embeddings, class tokens and the like. Default: none."""
        return set()

    #: parameter-name prefixes of the embedding stage, layer 0 for ``layer_id`` (e.g. "patch_embed", "pos_embed")
    embedding_params: ClassVar[tuple[str, ...]] = ()

    def layer_id(self, param_name: str) -> int:
        """Depth index of a parameter for layer-wise lr decay, in [0, num_layers).

        Default, for an embedding stage + ``self.blocks`` + head: the ``embedding_params`` prefixes 0, block i
        (``blocks.<i>.``) i + 1, everything after the blocks (final norm, head) num_layers - 1.
        """
        if param_name.startswith(self.embedding_params):
            return 0
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        return self.num_layers - 1

    @property
    def num_layers(self) -> int:
        """The number of distinct ``layer_id`` values. Default: embeddings, each of ``self.blocks``, the rest."""
        return len(self.blocks) + 2

    # --- training switches ------------------------------------------------------------------------------------------

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (less memory, more compute)."""
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` outputs (0: none), on the model's device; ``config`` follows.

        Default: one ``nn.Linear(num_features, num_classes)`` as ``self.head``.
        """
        self.num_classes = num_classes
        self.config["num_classes"] = num_classes
        device = next(self.parameters()).device
        self.head = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()


__all__ = ["VitkitModel"]

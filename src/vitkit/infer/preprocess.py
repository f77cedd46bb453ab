"""What a checkpoint needs at inference time besides its weights: class names and its preprocessing.

Every inference path (predict, serve, export checks, bench, eval of quantized models) reads these from one place,
and the preprocessing is the same :class:`~vitkit.data.preprocess.Preprocessing` the training loop evaluated with,
so an image is resized, cropped and normalised exactly as the model saw its validation images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from torch import nn

from ..data.preprocess import Preprocessing
from ..models.contract import VitkitModel


@dataclass(frozen=True)
class InferenceSpec(Preprocessing):
    """A model's :class:`Preprocessing` and its class names; built from a checkpoint's metadata."""

    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    @classmethod
    def from_model(cls, model: nn.Module) -> InferenceSpec:
        """Read a model built by vitkit (``create_model`` or ``load_checkpoint``).

        The preprocessing comes from :meth:`Preprocessing.from_model`; class names from the checkpoint's user metadata
        (``extra["class_names"]``), else ``class_0``...
        """
        if not isinstance(model, VitkitModel):
            raise TypeError(f"{type(model).__name__} is not a vitkit model (a vitkit.models.VitkitModel)")
        meta = getattr(model, "checkpoint_meta", None) or {}  # set by load_checkpoint only
        extra = meta.get("extra") or {}
        num_classes = int(model.config.get("num_classes", model.num_classes))
        names = extra.get("class_names")
        if names is None:
            names = [f"class_{i}" for i in range(num_classes)]
        elif len(names) != num_classes:
            raise ValueError(f"checkpoint lists {len(names)} class names but the model has {num_classes} outputs")
        return cls.with_classes(Preprocessing.from_model(model), names)

    @classmethod
    def with_classes(cls, preprocessing: Preprocessing, class_names: Sequence[str]) -> InferenceSpec:
        values = {f.name: getattr(preprocessing, f.name) for f in fields(Preprocessing)}
        return cls(**values, class_names=tuple(class_names))

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing alone, as checkpoints and exports store it."""
        return Preprocessing(**{f.name: getattr(self, f.name) for f in fields(Preprocessing)})


__all__ = ["InferenceSpec"]

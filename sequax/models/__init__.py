"""Models built from ``config.model``."""

from sequax.models.backbone import ModelSpec, SequenceModel, build_model
from sequax.models.heads import ClassificationHead, RetrievalHead, pool

__all__ = ["ClassificationHead", "ModelSpec", "RetrievalHead", "SequenceModel", "build_model", "pool"]

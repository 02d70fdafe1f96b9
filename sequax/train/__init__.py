"""Config-driven training."""

from sequax.train.config import default_config, validate
from sequax.train.trainer import train_and_evaluate

__all__ = ["default_config", "train_and_evaluate", "validate"]

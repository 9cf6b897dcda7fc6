"""Training: the config, the regimes and the loop."""

from geomxai.train._build import build_from_spec, model_spec
from geomxai.train._checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from geomxai.train._config import REGIMES, ConfigError, TrainConfig, parse_override

__all__ = [
    "REGIMES",
    "CheckpointError",
    "ConfigError",
    "TrainConfig",
    "build_from_spec",
    "load_checkpoint",
    "model_spec",
    "parse_override",
    "read_checkpoint",
    "save_checkpoint",
]

"""Training: the config, the four regimes, the loop, run directories, multi-process training.

``train(config)`` trains one run (``regular``, ``sgt``, ``dbn`` or ``saliencydecor``) and returns
its run directory (``config.json``, ``checkpoints/epoch_NNNN.pt``, ``metrics.jsonl``); see
``docs/training.md``. The run-directory reader (``read_run``, ``list_checkpoints``,
``read_metrics``, ...) is :mod:`geomxai.rundir`, re-exported here.
"""

from geomxai._lock import DirectoryLockedError
from geomxai.rundir import (
    Run,
    checkpoint_path,
    list_checkpoints,
    read_config,
    read_metrics,
    read_run,
)
from geomxai.train._augment import random_flip_crop
from geomxai.train._build import build_from_spec, model_spec
from geomxai.train._checkpoint import FORMAT as CHECKPOINT_FORMAT
from geomxai.train._checkpoint import VERSION as CHECKPOINT_VERSION
from geomxai.train._checkpoint import (
    CheckpointError,
    check_run_identity,
    load_checkpoint,
    read_checkpoint,
    read_identity,
    save_checkpoint,
)
from geomxai.train._config import REGIMES, ConfigError, TrainConfig, parse_override
from geomxai.train._distributed import (
    SyncGroupWhitening,
    all_gather_cat,
    all_reduce_sum,
    convert_sync_whitening,
    resolve_device,
)
from geomxai.train._graph import StaticStep, prepare_for_capture, set_lr
from geomxai.train._loop import CosineSchedule, Trainer, TrainingDivergedError, derive_seed, train
from geomxai.train._losses import classification_loss, decorrelation_term, kl_consistency
from geomxai.train._masking import (
    fill_values,
    low_saliency_mask,
    mask_low_saliency,
    num_masked,
    saliency_scores,
)
from geomxai.train._step import (
    TERMS,
    TrainForward,
    eval_input_gradient,
    frozen_running_stats,
    same_in_both_modes,
    train_step,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "REGIMES",
    "TERMS",
    "CheckpointError",
    "ConfigError",
    "CosineSchedule",
    "DirectoryLockedError",
    "Run",
    "StaticStep",
    "SyncGroupWhitening",
    "TrainConfig",
    "TrainForward",
    "Trainer",
    "TrainingDivergedError",
    "all_gather_cat",
    "all_reduce_sum",
    "build_from_spec",
    "check_run_identity",
    "checkpoint_path",
    "classification_loss",
    "convert_sync_whitening",
    "decorrelation_term",
    "derive_seed",
    "eval_input_gradient",
    "fill_values",
    "frozen_running_stats",
    "kl_consistency",
    "list_checkpoints",
    "load_checkpoint",
    "low_saliency_mask",
    "mask_low_saliency",
    "model_spec",
    "num_masked",
    "parse_override",
    "prepare_for_capture",
    "random_flip_crop",
    "read_checkpoint",
    "read_config",
    "read_identity",
    "read_metrics",
    "read_run",
    "resolve_device",
    "saliency_scores",
    "same_in_both_modes",
    "save_checkpoint",
    "set_lr",
    "train",
    "train_step",
]

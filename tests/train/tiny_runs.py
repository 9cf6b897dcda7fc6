"""The tiny training run the trainer's tests start from: cnn2 on 128 digits, one epoch."""

from __future__ import annotations

from geomxai.train import TrainConfig


def tiny_config(out_dir, **changes) -> TrainConfig:
    """A seconds-long run into ``out_dir``; ``changes`` override any field."""
    values = {
        "dataset": "digits",
        "model": "cnn2",
        "epochs": 1,
        "batch_size": 32,
        "train_subset": 128,
        "test_subset": 64,
        "group_size": 8,
        "lr": 0.05,
        "progress": False,
        "out_dir": str(out_dir),
    }
    return TrainConfig(**{**values, **changes})

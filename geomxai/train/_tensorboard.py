"""The trainer's TensorBoard log: each epoch's metrics as scalars (``TrainConfig.tensorboard_dir``)."""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Any

from geomxai._checks import Interval


def log_epoch(log_dir, epoch: int, metrics: dict[str, Any]) -> Path:
    """Write every finite number of ``metrics`` as a scalar ``metrics/<name>`` at step ``epoch``.

    A writer is opened, flushed and closed per epoch (TensorBoard reads every event file of the
    folder together), so a killed run keeps what it logged and a resumed one goes on in the same
    folder; ``metrics.jsonl`` stays the record the analysis reads.

    Returns
    -------
    Path
        ``log_dir``.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            "TrainConfig.tensorboard_dir needs the tensorboard package: pip install tensorboard "
            "(or leave tensorboard_dir unset)"
        ) from err
    log_dir = Path(log_dir)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for name, value in metrics.items():
            # A finite number, not a bool: a NaN or inf epoch has nothing to plot.
            if name != "epoch" and Interval(Real, None, None).accepts(value):
                writer.add_scalar(f"metrics/{name}", float(value), int(epoch))
        writer.flush()
    finally:
        writer.close()
    return log_dir

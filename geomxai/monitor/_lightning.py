"""A Lightning ``Callback`` built on :class:`~geomxai.monitor.GeometryMonitor` (extra: lightning)."""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "LightningGeometryCallback needs Lightning: pip install 'geomxai[lightning]' (or pip "
        "install lightning)"
    ) from err

from geomxai.monitor._monitor import GeometryMonitor


class LightningGeometryCallback(Callback):
    """Snapshots of the ``LightningModule`` every ``monitor.every_n_steps`` optimizer steps.

    The module is snapshotted at the start of training (step 0, the initial model), after each
    training batch whose ``trainer.global_step`` is due, and at the end of training (the final
    model, whatever its step). Only the global-zero process measures and writes. The module's
    ``forward`` must map the probe's inputs to logits.

    Parameters
    ----------
    monitor : GeometryMonitor
        Or the arguments of one, as keywords (``probe=..., layers=..., every_n_steps=...``).
    """

    def __init__(self, monitor: GeometryMonitor | None = None, **monitor_kwargs):
        super().__init__()
        if monitor is None:
            monitor = GeometryMonitor(**monitor_kwargs)
        elif monitor_kwargs:
            raise TypeError("give a GeometryMonitor or its arguments, not both")
        self.monitor = monitor

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.monitor.step(pl_module, trainer.global_step, force=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            self.monitor.step(pl_module, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.monitor.step(pl_module, trainer.global_step, force=True)
            self.monitor.close()

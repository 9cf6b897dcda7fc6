"""A Hugging Face ``TrainerCallback`` built on :class:`~geomxai.monitor.GeometryMonitor`
(extra: transformers)."""

from __future__ import annotations

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "HFGeometryCallback needs transformers: pip install 'geomxai[transformers]' (or pip "
        "install transformers)"
    ) from err

from geomxai.monitor._monitor import GeometryMonitor


class HFGeometryCallback(TrainerCallback):
    """Snapshots of a ``transformers.Trainer``'s model every ``monitor.every_n_steps`` steps.

    At the beginning of training (step 0), after each optimizer step that is due
    (``state.global_step``), and at the end. Only the world process zero measures and writes.
    A model whose output is a ``ModelOutput`` is read through its ``logits``.

    Parameters
    ----------
    monitor : GeometryMonitor
        Or the arguments of one, as keywords.
    """

    def __init__(self, monitor: GeometryMonitor | None = None, **monitor_kwargs):
        if monitor is None:
            monitor = GeometryMonitor(**monitor_kwargs)
        elif monitor_kwargs:
            raise TypeError("give a GeometryMonitor or its arguments, not both")
        self.monitor = monitor

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            self.monitor.step(model, state.global_step, force=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            self.monitor.step(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            self.monitor.step(model, state.global_step, force=True)
            self.monitor.close()

"""GeometryMonitor: snapshots of a model's probe geometry and saliency during any training loop."""

from __future__ import annotations

import json
import math
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geomxai._checks import Interval, check

SNAPSHOT_DIR = "checkpoints"
"""Where the monitor's weight snapshots go under ``out_dir`` (``step_00000100.pt``, ...)."""

LOG_NAME = "monitor.jsonl"
"""The monitor's log under ``out_dir``: one JSON object per snapshot."""


def _as_probe(probe):
    """A :class:`~geomxai.study.Probe` from a Probe, ``(inputs, labels)`` or inputs alone."""
    from geomxai.study import Probe

    if isinstance(probe, Probe):
        return probe
    if isinstance(probe, (tuple, list)) and len(probe) == 2:
        images, labels = probe
        labels = None if labels is None else torch.as_tensor(labels).long()
    else:
        images, labels = probe, None
    images = torch.as_tensor(images)
    if not images.is_floating_point():
        raise TypeError(
            f"probe inputs must be floating tensors (n, ...); got dtype {images.dtype} (convert "
            "images to floats in [0, 1] first)"
        )
    if labels is not None and len(labels) != len(images):
        raise ValueError(
            f"probe inputs and labels must have the same length; got {len(images)} and "
            f"{len(labels)}"
        )
    return Probe(images.detach().float().cpu(), labels, None, "probe")


class _Logits(nn.Module):
    """A model whose output is not a tensor (a Hugging Face ``ModelOutput``) seen through its
    ``logits``, for the saliency pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out["logits"]


class GeometryMonitor:
    """Probe geometry and saliency of a model while it trains, every ``every_n_steps`` steps.

    At each snapshot the monitor, with the model in eval mode (every submodule's train flag is
    restored afterwards, no parameter ``.grad`` and no random-number stream is touched):

    - saves the weights as a plain state_dict, ``out_dir/checkpoints/step_NNNNNNNN.pt``
      (written to a temporary file and renamed), which
      :func:`geomxai.study.analyze_checkpoints` reads (:meth:`analyze` does it), and so the
      report;
    - measures, per layer, the effective rank and participation ratio of the probe features,
      and against the previous snapshot the axis swap rate of the top ``top_k`` principal axes,
      the subspace overlap and the linear CKA; with labels, the probe's accuracy and the mean
      cosine similarity of its saliency maps to the previous snapshot's (saliency stability);
    - appends them to ``out_dir/monitor.jsonl`` and, with ``tensorboard=True``, logs them as
      scalars (``geometry/<layer>/effective_rank``, ``dynamics/<layer>/swap_rate``,
      ``dynamics/<layer>/cka_previous``, ``saliency/stability``, ``probe/accuracy``) to
      ``out_dir/tensorboard`` with :class:`torch.utils.tensorboard.SummaryWriter`.

    Parameters
    ----------
    probe : Probe, (inputs, labels) or inputs
        A fixed probe set, the same at every snapshot (a few hundred samples; float inputs as
        the model takes them).
    layers : str or list of str
        Layers to watch (dotted ``named_modules()`` names or globs).
    every_n_steps : int
        A snapshot when ``step % every_n_steps == 0``.
    out_dir : path-like
        Created if needed.
    tensorboard : bool
        Log scalars to TensorBoard (needs the ``tensorboard`` package).
    top_k : int
        Principal axes tracked for the swap rate.
    saliency_method : str
        A :func:`geomxai.attribution.saliency` method name.
    save_weights : bool
        Write the weight snapshots (needed by :meth:`analyze` and the report).
    batch_size : int

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from geomxai import GeometryMonitor
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    >>> import tempfile
    >>> monitor = GeometryMonitor((x, y), "1", every_n_steps=2, out_dir=tempfile.mkdtemp(),
    ...                           tensorboard=False)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> for step in range(5):
    ...     _ = monitor.step(net, step)  # before the update: step 0 is the initial model
    ...     opt.zero_grad()
    ...     nn.functional.cross_entropy(net(x), y).backward()
    ...     opt.step()
    >>> sorted(monitor.checkpoints)
    [0, 2, 4]
    >>> 0 <= monitor.history[-1]["layers"]["1"]["swap_rate"] <= 1
    True
    >>> monitor.close()
    """

    def __init__(
        self,
        probe,
        layers,
        *,
        every_n_steps: int = 100,
        out_dir="geometry_monitor",
        tensorboard: bool = True,
        top_k: int = 16,
        saliency_method: str = "abs_gradient",
        save_weights: bool = True,
        batch_size: int = 256,
    ):
        check(every_n_steps, "every_n_steps", Interval(Integral, 1, None))
        check(top_k, "top_k", Interval(Integral, 1, None))
        self.probe = _as_probe(probe)
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers:
            raise ValueError("layers must name at least one layer to watch")
        self.every_n_steps = every_n_steps
        self.out_dir = Path(out_dir)
        self.tensorboard = bool(tensorboard)
        self.top_k = top_k
        self.saliency_method = saliency_method
        self.save_weights = bool(save_weights)
        self.batch_size = batch_size
        self.checkpoints: dict[int, Path] = {}
        self.history: list[dict] = []
        self._previous: dict | None = None
        self._writer = None
        if self.tensorboard:
            self._open_writer()  # fails now, naming the fix, not at the first snapshot

    # ---- lifecycle
    def _open_writer(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    "GeometryMonitor(tensorboard=True) needs the tensorboard package: pip "
                    "install tensorboard (or pass tensorboard=False)"
                ) from err
            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        return self._writer

    def close(self) -> None:
        """Flush and close the TensorBoard writer (a later snapshot opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- snapshots
    def step(self, model: nn.Module, step: int, *, force: bool = False) -> dict | None:
        """Take a snapshot of ``model`` at training step ``step`` when it is due (or ``force``).

        Returns the snapshot's record (``{"step", "layers": {layer: {...}}, ...}``), or None
        when no snapshot was due. A step already taken is never taken twice.
        """
        check(step, "step", Interval(Integral, 0, None))
        step = int(step)
        taken = step in self.checkpoints or any(h["step"] == step for h in self.history)
        if taken or not (force or step % self.every_n_steps == 0):
            return None
        from geomxai._model_state import evaluating

        with torch.random.fork_rng(devices=[]), evaluating(model):
            record, state = self._measure(model, step)
        if self.save_weights:
            self.checkpoints[step] = self._save(model, step)
        self._previous = state
        self.history.append(record)
        self._log(record)
        return record

    def _measure(self, model: nn.Module, step: int) -> tuple[dict, dict]:
        from geomxai.collect import collect_features
        from geomxai.dynamics import axis_swaps, saliency_stability, top_eigvecs
        from geomxai.geometry import effective_rank, linear_cka, participation_ratio

        feats = collect_features(model, self.probe.images, self.layers, batch_size=self.batch_size)
        names = [str(v) for v in feats.data_vars]
        layers, state = {}, {"features": {}, "eig": {}, "saliency": None}
        prev = self._previous
        for name in names:
            h = np.asarray(feats[name].values, dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # small-probe warnings: the record says n
                row = {
                    "effective_rank": _number(lambda h=h: effective_rank(h)),
                    "participation_ratio": _number(lambda h=h: participation_ratio(h)),
                }
                vals, vecs = top_eigvecs(h, min(self.top_k, h.shape[1]))
                if prev is not None and name in prev["eig"]:
                    pvals, pvecs = prev["eig"][name]
                    swaps = axis_swaps(pvecs, vecs, eigvals_a=pvals, eigvals_b=vals)
                    row["swap_rate"] = float(swaps["swap_rate"])
                    row["nondegenerate_swap_rate"] = float(swaps["nondegenerate_swap_rate"])
                    row["subspace_overlap"] = float(swaps["subspace_overlap"])
                    row["cka_previous"] = _number(
                        lambda a=prev["features"][name], h=h: linear_cka(a, h)
                    )
            state["features"][name] = h
            state["eig"][name] = (vals, vecs)
            layers[name] = row
        record = {"step": step, "n_probe": len(self.probe.images), "layers": layers}
        if self.probe.labels is not None:
            from geomxai.attribution import saliency

            with torch.no_grad():
                logits = _forward(_Logits(model), self.probe.images, self.batch_size)
            record["probe_accuracy"] = float((logits.argmax(1) == self.probe.labels).float().mean())
            maps = saliency(
                _Logits(model),
                self.probe.images,
                self.probe.labels,
                method=self.saliency_method,
                batch_size=self.batch_size,
            )
            maps = maps.detach().cpu().numpy()
            state["saliency"] = maps
            if prev is not None and prev["saliency"] is not None:
                per_sample = np.asarray(saliency_stability(prev["saliency"], maps), dtype=float)
                finite = per_sample[np.isfinite(per_sample)]
                record["saliency_stability"] = float(finite.mean()) if finite.size else math.nan
        return record, state

    def _save(self, model: nn.Module, step: int) -> Path:
        from geomxai._fs import atomic_path

        folder = self.out_dir / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        path = folder / f"step_{step:08d}.pt"
        return atomic_path(path, lambda tmp: torch.save(state, tmp))

    def _log(self, record: dict) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG_NAME, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, allow_nan=True) + "\n")
        if not self.tensorboard:
            return
        writer = self._open_writer()
        step = record["step"]
        for layer, row in record["layers"].items():
            for key, value in row.items():
                group = (
                    "geometry" if key in ("effective_rank", "participation_ratio") else "dynamics"
                )
                if math.isfinite(value):
                    writer.add_scalar(f"{group}/{layer}/{key}", value, step)
        for key, tag in (
            ("probe_accuracy", "probe/accuracy"),
            ("saliency_stability", "saliency/stability"),
        ):
            if key in record and math.isfinite(record[key]):
                writer.add_scalar(tag, record[key], step)
        writer.flush()

    # ---- afterwards
    def analyze(self, model, **kwargs):
        """:func:`geomxai.study.analyze_checkpoints` of every weight snapshot on the probe:
        the full per-step Dataset (dim ``epoch`` holding the steps, ``attrs["checkpoint_index"]
        == "step"``), which :func:`geomxai.study.combine_runs` turns into what
        :func:`geomxai.report.build_report` reads.

        ``model`` is the architecture (a module, copied, or a spec); ``kwargs`` go to
        ``analyze_checkpoints`` (``layers`` defaults to the monitored ones).
        """
        if not self.checkpoints:
            raise ValueError(
                "the monitor has no weight snapshots to analyse (none was due yet, or "
                "save_weights=False)"
            )
        from geomxai.study import analyze_checkpoints

        kwargs.setdefault("layers", self.layers)
        kwargs.setdefault("index", "step")
        return analyze_checkpoints(model, dict(self.checkpoints), self.probe, **kwargs)


def _number(fn) -> float:
    try:
        value = float(fn())
    except (ValueError, TypeError):
        return math.nan
    return value


def _forward(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    from geomxai._model_state import module_device, module_dtype

    device = module_device(model, fallback=images.device)
    dtype = module_dtype(model, fallback=images.dtype)
    return torch.cat([model(xb.to(device, dtype)).cpu() for xb in images.split(batch_size)])

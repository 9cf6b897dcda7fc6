"""The training loop: from a :class:`TrainConfig` to a run directory of checkpoints and metrics."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from geomxai.data import DatasetBundle, dataset_tensors, load_dataset
from geomxai.models import FeatureModel, model_traits
from geomxai.train._augment import random_flip_crop
from geomxai.train._build import build_from_spec, model_spec
from geomxai.train._checkpoint import save_checkpoint
from geomxai.train._config import ConfigError, TrainConfig
from geomxai.train._distributed import (
    DistEnv,
    all_reduce_,
    broadcast_object,
    convert_sync_whitening,
    setup_distributed,
    teardown_distributed,
)
from geomxai.train._graph import StaticStep, prepare_for_capture, set_lr
from geomxai.train._rundir import (
    ResumePoint,
    append_metrics,
    checkpoint_path,
    find_resume_point,
    list_checkpoints,
    lock_run_dir,
    start_run_dir,
    step_checkpoint_path,
)
from geomxai.train._step import TERMS, TrainForward, train_step

log = logging.getLogger("geomxai.train")

# Random streams, each seeded from (seed, epoch, rank, stream) so that an epoch's randomness does
# not depend on what ran before it: a resumed run replays exactly what a straight run would do.
_SHUFFLE, _MASK, _TORCH, _AUGMENT = 0, 1, 2, 3
_SUBSET_SEED = 0
_EVAL_BATCH = 512


def check_interval(device: torch.device) -> int:
    """Steps between host reads of the finite-loss flags: every step on the CPU (a read costs
    nothing there); every 50 on a GPU, where each read waits for the device to drain."""
    return 1 if device.type == "cpu" else 50


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; the message names the term and the epoch."""


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from ``seed`` and ``keys`` (numpy's SeedSequence hashing).

    Examples
    --------
    >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
    True
    """
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class CosineSchedule:
    """Per-step cosine annealing from ``base_lr`` to 0 over ``total_steps``, in closed form.

    ``lr(t) = base_lr * (1 + cos(pi * t / total_steps)) / 2`` for step ``t = 0, 1, ...``. The
    closed form (instead of torch's recursive ``CosineAnnealingLR``) makes resuming exact and lets
    a resumed run extend ``epochs``: the schedule is then recomputed over the new length.

    Examples
    --------
    >>> s = CosineSchedule(base_lr=0.1, total_steps=4)
    >>> [round(s.lr(t), 4) for t in range(4)]
    [0.1, 0.0854, 0.05, 0.0146]
    """

    def __init__(self, *, base_lr: float, total_steps: int, step: int = 0):
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.step = int(step)

    def lr(self, step: int | None = None) -> float:
        t = self.step if step is None else step
        return (
            self.base_lr
            * 0.5
            * (1.0 + math.cos(math.pi * min(t, self.total_steps) / self.total_steps))
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": "cosine",
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr = float(state["base_lr"])
        self.step = int(state["step"])


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the run, and the previous global settings restored after it."""
    cudnn = torch.backends.cudnn
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    try:
        if enabled:
            if device.type == "cuda":
                # cuBLAS needs a fixed workspace for reproducible GEMMs; set before first use.
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # warn_only: an op without a deterministic kernel warns instead of ending the run.
            torch.use_deterministic_algorithms(True, warn_only=True)
            cudnn.deterministic, cudnn.benchmark = True, False
        elif device.type == "cuda":
            cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]


def _is_tensor_backed(dataset: Dataset) -> bool:
    if isinstance(dataset, TensorDataset):
        return True
    return isinstance(dataset, Subset) and _is_tensor_backed(dataset.dataset)


def _subset_indices(n: int, subset: int | None) -> torch.Tensor | None:
    """A fixed random subset (seed 0, the same for every regime and seed of a study), sorted."""
    if subset is None or subset >= n:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_SUBSET_SEED))
    return order[:subset].sort().values


class _Split:
    """One split of a dataset, served as device batches by index.

    Tensor-backed data (or any data with ``data_on_device``) is held as two tensors, on the
    device or pinned in host memory; a batch is then one gather, with no DataLoader and no
    worker processes. Other datasets go through a DataLoader with the same index batches.
    """

    def __init__(self, dataset: Dataset, *, subset: int | None, device: torch.device, config):
        index = _subset_indices(len(dataset), subset)
        self.device = device
        self.loader_dataset = None
        if config.data_on_device or _is_tensor_backed(dataset):
            if not _is_tensor_backed(dataset):
                log.info("reading %d images into memory (data_on_device=True)", len(dataset))
            images, labels = dataset_tensors(dataset)
            if index is not None:
                images, labels = images[index], labels[index]
            images, labels = images.float(), labels.long()
            if config.data_on_device:
                images, labels = images.to(device), labels.to(device)
            elif device.type == "cuda":
                images, labels = images.pin_memory(), labels.pin_memory()
            self.images, self.labels = images, labels
            self.n = len(labels)
        else:
            self.loader_dataset = dataset if index is None else Subset(dataset, index.tolist())
            self.n = len(self.loader_dataset)
            self.num_workers = config.num_workers

    def batches(
        self, index_batches: list[torch.Tensor]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) on the device for each index tensor, in order."""
        if self.loader_dataset is None:
            if not index_batches:
                return
            # One host-to-device copy of the epoch's indices, not one per batch.
            sizes = [len(idx) for idx in index_batches]
            flat = torch.cat(index_batches).to(self.images.device)
            for idx in flat.split(sizes):
                x, y = self.images[idx], self.labels[idx]
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        loader = DataLoader(
            self.loader_dataset,
            batch_sampler=[idx.tolist() for idx in index_batches],
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            yield (
                x.float().to(self.device, non_blocking=True),
                torch.as_tensor(y).long().to(self.device, non_blocking=True),
            )


def _model_input(bundle: DatasetBundle, cfg: TrainConfig) -> tuple[int, int, int]:
    """``(in_channels, image_size, image_size)`` the model of a run is built for.

    Images (c, h, w) must be square. A table of ``d`` features is built as ``d`` channels of a
    1x1 image, for a model that declares it takes tables (:class:`geomxai.models.ModelTraits`):
    the ConfigError otherwise names the model that does, and refuses the image augmentation.
    """
    if bundle.kind == "tabular":
        (d,) = bundle.input_shape
        if not model_traits(cfg.model).takes_tables:
            raise ConfigError(
                f"dataset {cfg.dataset!r} is a table of {d} features and model {cfg.model!r} "
                "takes images; use model='mlp'"
            )
        if cfg.augment:
            raise ConfigError(
                f"augment flips and crops images and dataset {cfg.dataset!r} is a table of "
                f"{d} features; set augment=false"
            )
        return d, 1, 1
    if bundle.kind != "image":
        raise ConfigError(
            f"dataset {cfg.dataset!r} has inputs of shape {bundle.input_shape}; the trainer "
            "takes images (c, h, w) and tables (d,)"
        )
    c, h, w = bundle.input_shape
    if h != w:
        raise ConfigError(
            f"dataset {cfg.dataset!r} has {h}x{w} images; geomxai models take square images"
        )
    return c, h, w


class Trainer:
    """The lifecycle of one training run; :func:`train` is ``Trainer(config).fit()``.

    Parameters
    ----------
    config : TrainConfig
    dataset : DatasetBundle, optional
        Already loaded data whose ``name`` equals ``config.dataset`` (saves reloading it in a
        study, and lets tests train on tensors made on the spot). Default: ``load_dataset``.

    Attributes (after :meth:`fit`)
    ----------
    model : FeatureModel
        The trained model (in eval mode), with the final weights.
    run_dir : Path
    env : DistEnv
    """

    def __init__(self, config: TrainConfig, *, dataset: DatasetBundle | None = None):
        self.config = config
        self.dataset = dataset
        self.run_dir = Path(config.out_dir)
        self.model: FeatureModel | None = None
        self.env: DistEnv | None = None
        self._lock = None

    # ------------------------------------------------------------------ entry point
    def fit(self) -> Path:
        """Train (or resume) to ``config.epochs``; returns the run directory."""
        if not isinstance(self.config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig; got {type(self.config).__name__}")
        self.config.validate()
        env = setup_distributed(self.config.device)
        self.env = env
        devices = [env.device.index or 0] if env.device.type == "cuda" else []
        try:
            # The caller's RNG state and determinism flags are left as they were.
            with (
                torch.random.fork_rng(devices=devices),
                _determinism(self.config.deterministic, env.device),
            ):
                start_epoch = self._prepare()
                self._run(start_epoch)
        finally:
            # The run directory's lock goes with the run, however it ends (the OS drops it
            # too if the process is killed); a directory it created for a refused run goes too.
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.release()
            teardown_distributed(env)
        return self.run_dir

    # ------------------------------------------------------------------ setup
    def _load_data(self) -> DatasetBundle:
        cfg = self.config
        if self.dataset is None:
            return load_dataset(cfg.dataset)
        if not isinstance(self.dataset, DatasetBundle):
            raise TypeError(f"dataset must be a DatasetBundle; got {type(self.dataset).__name__}")
        if self.dataset.name != cfg.dataset:
            raise ConfigError(
                f"dataset must match the config; got a {self.dataset.name!r} bundle for "
                f"dataset={cfg.dataset!r}"
            )
        return self.dataset

    def _build_model(self, bundle: DatasetBundle) -> tuple[FeatureModel, dict]:
        cfg = self.config
        c, h, w = _model_input(bundle, cfg)
        spec = model_spec(cfg, in_channels=c, num_classes=bundle.num_classes, image_size=h)
        torch.manual_seed(cfg.seed)
        try:
            model = build_from_spec(spec)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(
                f"model {cfg.model!r} does not fit dataset {cfg.dataset!r} ({c} channels, "
                f"{h}x{w}, {bundle.num_classes} classes): {err}"
            ) from err
        # One eval-mode forward of a blank batch: a channel or class mismatch surfaces now, with
        # the fields named, not as a shape error in the middle of the first epoch.
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, *bundle.input_shape))
        except RuntimeError as err:
            raise ConfigError(
                f"model {cfg.model!r} does not accept dataset {cfg.dataset!r} images "
                f"({c} channels, {h}x{w}): {err}"
            ) from err
        if tuple(out.shape) != (2, bundle.num_classes):
            raise ConfigError(
                f"model {cfg.model!r} gives {tuple(out.shape)[1:]} outputs but dataset "
                f"{cfg.dataset!r} has {bundle.num_classes} classes"
            )
        model.train()
        return model, spec

    def _prepare(self) -> int:
        """Everything before epoch 1; returns the epoch the run has reached (0 when fresh).

        The order is part of the contract. The model is built first, right after its seed is
        set, so that a seed gives the same initial weights whatever else the run does. The
        checks that need no run directory (data, model, batch size) come before its lock, so a
        refused config leaves no directory behind. ``config.json`` and checkpoint 0 are written
        last, once the model, optimiser and forward are built.
        """
        self._check_cuda_graph()
        bundle = self._load_data()
        model, self.spec = self._build_model(bundle)
        self.train_split, self.test_split, self.steps_per_epoch = self._split_data(bundle)
        resume = self._claim_run_dir()
        payload = None if resume is None else resume.payload
        # A sub-epoch checkpoint's unfinished epoch: its steps done, loss sums and RNG states.
        self._partial = None if payload is None else payload.get("partial_epoch")
        self.model = self._place_model(model, payload)
        start_epoch = self._make_optimizer(payload)
        self.net, self.no_sync = self._wrap_forward(self.model)
        self.stepper = self._make_stepper()
        self._initialise_run_dir(resume)
        return start_epoch

    def _check_cuda_graph(self) -> None:
        """What ``cuda_graph=true`` needs beyond the config's own checks: the device it resolved
        to is CUDA, and one process (DDP's all-reduce is not captured)."""
        cfg, env = self.config, self.env
        if not cfg.cuda_graph:
            return
        if env.distributed:
            raise ConfigError(
                f"cuda_graph=true trains in one process; got {env.world_size} processes (the "
                "captured step has no DDP all-reduce). Set cuda_graph=false for multi-process runs"
            )
        if env.device.type != "cuda":
            raise ConfigError(
                f"cuda_graph=true needs a CUDA device; device={cfg.device!r} resolved to "
                f"{env.device}. Set cuda_graph=false to train on {env.device.type}"
            )

    def _make_stepper(self) -> StaticStep:
        """The optimisation step, captured as a CUDA graph with ``cuda_graph``, and the masking
        and augmentation generators it keeps for the whole run (reseeded every epoch)."""
        cfg, device = self.config, self.env.device
        self.mask_gen = torch.Generator(device=device)
        self.aug_gen = torch.Generator(device=device)
        return StaticStep(
            self.net,
            self.model,
            self.optimizer,
            config=cfg,
            params=self.params,
            generator=self.mask_gen,
            no_sync=self.no_sync,
            capture=cfg.cuda_graph,
            # Looked up here, so that a test's stand-in for train_step is the one that runs.
            step=train_step,
        )

    def _split_data(self, bundle: DatasetBundle) -> tuple[_Split, _Split, int]:
        """The train and test splits, served on the device, and the steps per epoch."""
        cfg, env = self.config, self.env
        if cfg.batch_size % env.world_size:
            raise ConfigError(
                f"batch_size is the global batch and must divide among the {env.world_size} "
                f"processes; got batch_size={cfg.batch_size}"
            )
        train_split = _Split(bundle.train, subset=cfg.train_subset, device=env.device, config=cfg)
        test_split = _Split(bundle.test, subset=cfg.test_subset, device=env.device, config=cfg)
        steps_per_epoch = train_split.n // cfg.batch_size
        if steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size must not exceed the number of training images; got "
                f"batch_size={cfg.batch_size} for {train_split.n} images"
                + (f" (train_subset={cfg.train_subset})" if cfg.train_subset else "")
            )
        return train_split, test_split, steps_per_epoch

    def _claim_run_dir(self) -> ResumePoint | None:
        """Lock and inspect the run directory; where a resume continues, or None.

        What the directory allows is :func:`find_resume_point`'s decision (``_rundir``); here
        rank 0 locks and asks, and every rank gets its verdict, so that all of them raise
        together or all go on (one raising alone would leave the others hanging). The lock
        comes first: what the directory holds is only known while no other writer can change
        it. The lock is kept in ``self._lock`` until :meth:`fit` ends.
        """
        env = self.env
        verdict: dict[str, Any] = {"error": None, "payload": None}
        if env.is_main:
            try:
                self._lock = lock_run_dir(self.run_dir)
                verdict["payload"] = find_resume_point(
                    self.run_dir,
                    self.config,
                    self.spec,
                    steps_per_epoch=self.steps_per_epoch,
                    world_size=env.world_size,
                )
            except Exception as err:  # forwarded, so that no rank waits for a rank that failed
                if not env.distributed:
                    raise
                verdict["error"] = err
        verdict = broadcast_object(verdict)
        if verdict["error"] is not None:
            raise verdict["error"]
        return verdict["payload"]

    def _place_model(self, model: FeatureModel, payload: dict | None) -> FeatureModel:
        """The model with the resumed weights (if any), on the device in its memory layout,
        with whitening and BatchNorm statistics synchronised across processes."""
        cfg, device = self.config, self.env.device
        if payload is not None:
            model.load_state_dict(payload["model"])
        model.to(device)
        # A sequence model (ViT) has no image maps for channels_last to lay out, nor has a
        # model of tabular rows (their input is (n, d)).
        self.channels_last = (
            cfg.channels_last
            and not model.is_sequence_model
            and not model_traits(cfg.model).takes_tables
        )
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.env.distributed:
            model = convert_sync_whitening(model)
            has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
            if device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif has_bn:
                # torch's SyncBatchNorm runs on accelerators only.
                log.warning("BatchNorm statistics are per process on %s (no SyncBatchNorm)", device)
        return model

    def _make_optimizer(self, payload: dict | None) -> int:
        """``self.params``, ``self.optimizer`` and ``self.schedule`` for ``self.model``, restored
        from ``payload`` on resume; returns the epoch the run has reached (0 when fresh)."""
        cfg = self.config
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.schedule = CosineSchedule(
            base_lr=cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch
        )
        if payload is not None:
            self.optimizer.load_state_dict(payload["optimizer"])
            self.schedule.load_state_dict(payload["scheduler"])
        if cfg.cuda_graph:
            # After the load, which brings back the checkpoint's plain-number rates.
            prepare_for_capture(self.optimizer)
        if payload is None:
            return 0
        start_epoch = int(payload["epoch"])
        log.info("resuming %s from epoch %d", self.run_dir, start_epoch)
        return start_epoch

    def _wrap_forward(
        self, model: FeatureModel
    ) -> tuple[nn.Module, Callable[[], contextlib.AbstractContextManager]]:
        """The training forward (mixed precision, DDP, ``torch.compile`` as configured) and the
        context that skips DDP's gradient sync (a null context without DDP)."""
        cfg, env = self.config, self.env
        device = env.device
        net: nn.Module = TrainForward(model, amp=cfg.amp)
        no_sync = contextlib.nullcontext
        if env.distributed:
            ddp = nn.parallel.DistributedDataParallel(
                net,
                device_ids=[device] if device.type == "cuda" else None,
                # Whitening and BatchNorm statistics are synchronised, so buffers already agree.
                broadcast_buffers=False,
            )
            no_sync = ddp.no_sync
            net = ddp
        if cfg.compile:
            net = torch.compile(net)
        if cfg.amp and device.type != "cuda":
            log.warning("amp=true only takes effect on CUDA; training in float32 on %s", device)
        return net, no_sync

    def _initialise_run_dir(self, resume: ResumePoint | None) -> None:
        """Start the run directory (``config.json``; on resume, the metrics trimmed to the
        checkpoints, as :func:`start_run_dir` does); on a fresh run, evaluate the initial
        weights (every rank) and save them as checkpoint 0."""
        if self.env.is_main:
            # On resume, everything was read and checked by find_resume_point, before this.
            start_run_dir(self.run_dir, self.config, resume)
        if resume is None:
            initial = {"epoch": 0, "test_acc": self.evaluate()}
            if self.env.is_main:
                self._save(0, initial)

    # ------------------------------------------------------------------ the loop
    def _epoch_index_batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's share of each global batch of the epoch (the last partial one dropped)."""
        cfg, env = self.config, self.env
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 0, _SHUFFLE))
        order = torch.randperm(self.train_split.n, generator=gen)
        used = order[: self.steps_per_epoch * cfg.batch_size].view(
            self.steps_per_epoch, env.world_size, -1
        )
        return list(used[:, env.rank].unbind(0))

    def _run(self, start_epoch: int) -> None:
        cfg = self.config
        if start_epoch >= cfg.epochs:
            log.info("%s is complete (%d of %d epochs)", self.run_dir, start_epoch, cfg.epochs)
            self.model.eval()
            return
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            metrics = self._train_epoch(epoch)
            if self.env.is_main:
                self._save(epoch, metrics)
                append_metrics(self.run_dir, metrics)
                if cfg.tensorboard_dir is not None:
                    from geomxai.train._tensorboard import log_epoch

                    log_epoch(cfg.tensorboard_dir, epoch, metrics)
            log.info(
                "%s epoch %d/%d: loss %.4f (ce %.4f, kl %.4f, decor %.4f), train acc %.4f, "
                "test acc %.4f, %.0f images/s",
                cfg.regime,
                epoch,
                cfg.epochs,
                metrics["loss_total"],
                metrics["loss_ce"],
                metrics["loss_kl"],
                metrics["loss_decor"],
                metrics["train_acc"],
                metrics["test_acc"],
                metrics["images_per_s"],
            )
        self.model.eval()

    def _epoch_generators(self, epoch: int) -> tuple[torch.Generator, torch.Generator]:
        """Seed this epoch's random streams on this rank: torch's global one (dropout and the
        like) and the run's masking and augmentation generators, returned in that order.

        The generators are reseeded, not replaced: a captured step replays the draws of the
        generator it was captured with.
        """
        cfg, rank = self.config, self.env.rank
        torch.manual_seed(derive_seed(cfg.seed, epoch, rank, _TORCH))
        self.mask_gen.manual_seed(derive_seed(cfg.seed, epoch, rank, _MASK))
        self.aug_gen.manual_seed(derive_seed(cfg.seed, epoch, rank, _AUGMENT))
        return self.mask_gen, self.aug_gen

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of optimiser steps; returns its metrics line (see :meth:`_epoch_metrics`)."""
        cfg, env = self.config, self.env
        device = env.device
        _, aug_gen = self._epoch_generators(epoch)
        partial, self._partial = self._partial, None
        done = 0 if partial is None else int(partial["steps_done"])
        if partial is not None:
            # Resumed mid-epoch: the generators continue from where the checkpoint left them,
            # and the epoch's batches from the next one, so the rest replays a straight run.
            self._restore_rng(partial["rng"][env.rank])
        index_batches = self._epoch_index_batches(epoch)[done:]
        check_every = check_interval(device)
        # Sub-epoch checkpoints every ``every`` global steps in this epoch (0: none). One int
        # test per step when they are off.
        every = cfg.checkpoint_every_steps or 0
        if cfg.checkpoint_steps_epochs is not None and epoch > cfg.checkpoint_steps_epochs:
            every = 0

        self.model.train()
        sums = torch.zeros(len(TERMS), device=device)
        if partial is not None:
            sums.copy_(partial["sums"])
        # Per loss term, the first step (1-based) at which it was NaN or inf; inf while finite.
        # Kept on the device and read every ``check_every`` steps, so the term that went bad
        # first is named, not one it contaminated by the time the host looked.
        first_bad = torch.full((len(TERMS) - 1,), math.inf, device=device)
        start = time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=done,
            desc=f"{cfg.regime} epoch {epoch}/{cfg.epochs}",
            unit="step",
            leave=False,
            disable=not (cfg.progress and env.is_main),
        )
        lr = self.schedule.lr()
        try:
            for i, (x, y) in enumerate(self.train_split.batches(index_batches), start=done):
                if cfg.augment:
                    x = random_flip_crop(x, generator=aug_gen)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                lr = self.schedule.lr()
                set_lr(self.optimizer, lr)
                # zero_grad, train_step and optimizer.step, with no host read in between.
                terms = self.stepper(x, y)
                self.schedule.step += 1
                sums += terms
                now_bad = torch.where(torch.isfinite(terms[:-1]), math.inf, float(i + 1))
                first_bad = torch.minimum(first_bad, now_bad)
                if (i + 1) % check_every == 0 or i + 1 == self.steps_per_epoch:
                    self._check_finite(first_bad, sums, epoch, i + 1, bar)
                if every and self.schedule.step % every == 0 and i + 1 < self.steps_per_epoch:
                    self._check_finite(first_bad, sums, epoch, i + 1, bar)
                    self._save_sub_epoch(epoch, i + 1, sums)
                bar.update(1)
        finally:
            bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - start
        self._check_weights_finite(epoch)
        return self._epoch_metrics(
            epoch,
            sums,
            lr=lr,
            start=start,
            train_seconds=train_seconds,
            n_run=self.steps_per_epoch - done,
        )

    def _check_weights_finite(self, epoch: int) -> None:
        """Raise if a weight is NaN or infinite at the end of ``epoch``.

        A non-finite gradient in the epoch's last step leaves finite losses but broken weights;
        they must not reach a checkpoint either (one sync per epoch).
        """
        if not bool(torch.stack([p.detach().isfinite().all() for p in self.params]).all()):
            raise TrainingDivergedError(
                f"training diverged: the weights became NaN or infinite in epoch {epoch} (a "
                "non-finite gradient in its last step); the epoch was not saved" + self._last_good()
            )

    def _epoch_metrics(
        self,
        epoch: int,
        sums: torch.Tensor,
        *,
        lr: float,
        start: float,
        train_seconds: float,
        n_run: int | None = None,
    ) -> dict[str, Any]:
        """The epoch's metrics line: mean loss terms and train accuracy over all ranks (from
        this rank's ``sums``, shape ``(len(TERMS),)``, which is summed in place across ranks),
        test accuracy, throughput (over the ``n_run`` steps this process ran: fewer than the
        epoch's after a mid-epoch resume), seconds since ``start`` (evaluation included), lr
        and steps."""
        cfg, env = self.config, self.env
        all_reduce_(sums)
        n_steps = self.steps_per_epoch
        means = (sums[:-1] / (n_steps * env.world_size)).tolist()
        train_acc = float(sums[-1]) / (n_steps * cfg.batch_size)
        test_acc = self.evaluate()
        return {
            "epoch": epoch,
            **{name: value for name, value in zip(TERMS[:-1], means, strict=True)},
            "train_acc": train_acc,
            "test_acc": test_acc,
            "images_per_s": (n_steps if n_run is None else n_run) * cfg.batch_size / train_seconds,
            "seconds": time.perf_counter() - start,
            "lr": lr,
            "steps": self.schedule.step,
        }

    def _check_finite(
        self, first_bad: torch.Tensor, sums: torch.Tensor, epoch: int, step: int, bar
    ) -> None:
        first = all_reduce_(first_bad.clone(), op="min")
        values = torch.cat([first, sums[:-1] / step]).tolist()
        first, means = values[: len(first)], values[len(first) :]
        if min(first) < math.inf:
            # The earliest term to go bad; on a tie the first in TERMS order, which lists the
            # total (non-finite whenever a term is) last, so the term itself is named.
            name, at = min(zip(TERMS[:-1], first, strict=True), key=lambda item: item[1])
            raise TrainingDivergedError(
                f"training diverged: {name} became NaN or infinite in epoch {epoch} "
                f"at step {int(at)} of {self.steps_per_epoch}; the epoch was not saved"
                + self._last_good()
                + ". Lower lr, or check the data for NaN"
            )
        if not bar.disable:
            bar.set_postfix(loss=f"{means[3]:.4f}", ce=f"{means[0]:.4f}", refresh=False)

    def _last_good(self) -> str:
        found = list_checkpoints(self.run_dir)
        return f"; the last good checkpoint is {found[max(found)]}" if found else ""

    @torch.no_grad()
    def evaluate(self) -> float:
        """Test accuracy of the current model (eval mode), over all ranks' shares of the test set."""
        env, model = self.env, self.model
        model.eval()
        n = self.test_split.n
        order = torch.arange(n)[env.rank :: env.world_size]
        batches = list(order.split(_EVAL_BATCH))
        counts = torch.zeros(2, device=env.device)
        use_amp = self.config.amp and env.device.type == "cuda"
        for x, y in self.test_split.batches(batches):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            counts[0] += (logits.argmax(dim=1) == y).sum()
            counts[1] += len(y)
        all_reduce_(counts)
        model.train()
        correct, total = counts.tolist()
        return correct / max(total, 1.0)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch: int, metrics: dict[str, Any]) -> Path:
        payload = {**self._payload(epoch), "metrics": metrics}
        return save_checkpoint(checkpoint_path(self.run_dir, epoch), payload)

    def _rng_states(self) -> list[dict[str, torch.Tensor]]:
        """Every rank's generator states now (torch's global one, CUDA's, the masking and the
        augmentation generators), gathered in rank order; a collective in a multi-process run."""
        state = {
            "torch": torch.get_rng_state(),
            "mask": self.mask_gen.get_state(),
            "augment": self.aug_gen.get_state(),
        }
        if self.env.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.env.device)
        if not self.env.distributed:
            return [state]
        gathered: list[Any] = [None] * self.env.world_size
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    def _restore_rng(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["torch"])
        self.mask_gen.set_state(state["mask"])
        self.aug_gen.set_state(state["augment"])
        if "cuda" in state and self.env.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.env.device)

    def _save_sub_epoch(self, epoch: int, done: int, sums: torch.Tensor) -> Path | None:
        """A sub-epoch checkpoint after ``done`` steps of ``epoch`` (global step
        ``self.schedule.step``): the weights and optimiser as an epoch checkpoint holds them,
        with ``epoch`` the epochs completed, plus what a resume needs to finish the epoch as a
        straight run would (``partial_epoch``: the steps done, this rank's loss sums so far and
        every rank's generator states). No metrics line: the epoch is not over."""
        rng = self._rng_states()  # every rank takes part
        if not self.env.is_main:
            return None
        self._check_weights_finite(epoch)
        payload = self._payload(epoch - 1)
        payload["partial_epoch"] = {
            "epoch": epoch,
            "steps_done": done,
            "sums": sums.detach().cpu().clone(),
            "rng": rng,
        }
        return save_checkpoint(step_checkpoint_path(self.run_dir, self.schedule.step), payload)

    def _payload(self, epoch: int) -> dict[str, Any]:
        """What every checkpoint holds: config, model, optimiser, schedule, RNG (for the record),
        ``epoch`` (epochs completed), ``step`` (global optimiser steps taken) and
        ``steps_per_epoch``."""
        env = self.env
        rng: dict[str, Any] = {
            "note": "every epoch reseeds its generators from (seed, epoch, rank, stream); "
            "these are the states at the end of this epoch, on rank 0",
            "torch": torch.get_rng_state(),
        }
        if env.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(env.device)
        state = {k: v.detach() for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:
            # A captured step's rate is a device tensor; checkpoints keep a plain number.
            if isinstance(group["lr"], torch.Tensor):
                group["lr"] = float(group["lr"])
        payload = {
            "config": self.config.to_dict(),
            "model_spec": self.spec,
            "model": state,
            "optimizer": optimizer,
            "scheduler": self.schedule.state_dict(),
            "rng": rng,
            "epoch": epoch,
            "step": self.schedule.step,
            "steps_per_epoch": self.steps_per_epoch,
        }
        return payload


def train(config: TrainConfig, *, dataset: DatasetBundle | None = None) -> Path:
    """Train one run and write its run directory; returns ``Path(config.out_dir)``.

    The run directory holds ``config.json``, ``checkpoints/epoch_0000.pt`` (initial weights),
    ``epoch_0001.pt``, ... (one per epoch) and ``metrics.jsonl`` (one JSON line per epoch:
    ``epoch, loss_ce, loss_kl, loss_decor, loss_total, train_acc, test_acc, images_per_s,
    seconds, lr, steps``). With ``config.resume`` the run continues from its last checkpoint.

    Parameters
    ----------
    config : TrainConfig
    dataset : DatasetBundle, optional
        Preloaded data named ``config.dataset``; default: :func:`geomxai.data.load_dataset`.

    Returns
    -------
    Path
        The run directory.

    Raises
    ------
    ConfigError
        Invalid or inconsistent settings (field named), found before any training.
    TrainingDivergedError
        A loss term became NaN or infinite; the last good checkpoint stays as it was.
    """
    return Trainer(config, dataset=dataset).fit()

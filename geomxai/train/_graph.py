"""One optimisation step on static buffers: the unit a CUDA graph captures and replays.

A CUDA graph replays a fixed sequence of kernels on fixed memory, so a training step can be
captured when its shapes are static (the loop drops the last partial batch of every epoch), its
inputs sit in buffers that outlive the graph (:class:`StaticStep` owns them and copies each batch
in), its random draws come from generators the graph knows (registered, and reseeded rather than
replaced), and it never waits for the host. The regimes' steps read nothing on the host (the NaN
stop keeps its flags on the device; see ``tests/train/test_train_graph.py``) except through the
whitening: ``torch.linalg.eigh``, which ``whitening_method="zca"`` uses, reads its convergence
status on the host, so a captured ``dbn`` or ``saliencydecor`` step needs
``whitening_method="newton_schulz"``. The learning rate, which changes every step, is a device
tensor that :func:`set_lr` overwrites in place (:func:`prepare_for_capture`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from numbers import Integral

import torch

from geomxai._checks import Interval, check
from geomxai.models import FeatureModel
from geomxai.train._config import TrainConfig
from geomxai.train._step import train_step


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr``.

    A tensor rate (see :func:`prepare_for_capture`) is overwritten in place, one small kernel and
    no host synchronisation, so a captured step that reads it sees the new value on its next
    replay; a plain number is replaced.

    Examples
    --------
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    >>> set_lr(opt, 0.05)
    >>> opt.param_groups[0]["lr"]
    0.05
    """
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def prepare_for_capture(optimizer: torch.optim.SGD) -> torch.optim.SGD:
    """Make an SGD optimiser's step capturable in a CUDA graph, in place; returns it.

    Each group's learning rate becomes a float32 tensor on its parameters' device (a captured
    step would otherwise replay the rate it was captured with), and the fused kernel is used:
    SGD's foreach path turns a tensor rate into a Python number (a host read on every step),
    the fused one reads it on the device (as float32, so a rate differs from the eager float64
    one by at most float32 rounding). Call it again after ``load_state_dict``, which brings
    back plain numbers.

    Parameters
    ----------
    optimizer : torch.optim.SGD
        Its parameters on a CUDA device (the fused kernel on the CPU reads a tensor rate on the
        host, which is harmless there but defeats the point).

    Returns
    -------
    torch.optim.SGD
        ``optimizer`` itself.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        raise TypeError(
            f"optimizer must be a torch.optim.SGD (the trainer's); got {type(optimizer).__name__}"
        )
    for group in optimizer.param_groups:
        device = group["params"][0].device
        lr = group["lr"]
        if not isinstance(lr, torch.Tensor) or lr.device != device or lr.dtype != torch.float32:
            # A plain rate (or one loaded to the CPU) read once, at setup.
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)
        group["fused"], group["foreach"] = True, False
    return optimizer


def _check_capturable(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    if not params or any(p.device.type != "cuda" for p in params):
        devices = sorted({str(p.device) for p in params}) or ["none"]
        raise ValueError(
            "capture=True needs every parameter on a CUDA device; got parameters on "
            + ", ".join(devices)
        )
    for group in optimizer.param_groups:
        lr = group["lr"]
        if not (
            isinstance(lr, torch.Tensor)
            and lr.is_cuda
            and lr.dtype == torch.float32
            and group.get("fused")
        ):
            raise ValueError(
                "capture=True needs an optimizer whose learning rate is a float32 CUDA tensor "
                "read by a fused kernel (the fused SGD kernel reads float32); got "
                f"lr={lr!r}, fused={group.get('fused')!r}. Call "
                "prepare_for_capture(optimizer) first"
            )


class StaticStep:
    """``zero_grad``, :func:`train_step` and ``optimizer.step`` on batches of one shape.

    Every call runs one optimisation step and returns the loss terms of :func:`train_step` as
    a new tensor. Eagerly (``capture=False``, the only mode off CUDA) that is exactly the plain
    step on the batch as given: nothing is copied, and only batches of the first batch's shape
    are accepted, as when capturing. With ``capture=True`` every call first copies the batch
    into two buffers the object owns (allocated like the first batch, memory format included),
    which the warm-up steps and the graph read: the first ``warmup`` calls run the step eagerly
    on a side stream, as CUDA graph capture requires (cuBLAS handles,
    autograd's per-stream state and the optimiser's momentum buffers are made there); the next
    call captures one whole step into a ``torch.cuda.CUDAGraph`` and replays it, and so does
    every call after it: one launch for the hundreds of kernels of a ``saliencydecor`` step.
    The warm-up calls are real steps on real batches, so a captured run makes the same updates
    as an eager one.

    What a captured step needs, checked where it can be: the parameters on CUDA and the
    optimiser prepared by :func:`prepare_for_capture` (its rate then changes through
    :func:`set_lr`); a step with no host read (``whitening_method="newton_schulz"`` wherever
    there is whitening; :class:`~geomxai.train.TrainConfig` refuses ``cuda_graph=true``
    otherwise); one process (DDP's all-reduce is not captured); batches of one shape (a batch
    of another shape raises); and ``generator`` kept for the object's lifetime, reseeded with
    ``manual_seed`` (a graph replays the draws of the generator registered at capture).

    Parameters
    ----------
    net, model, config, params, no_sync
        As for :func:`train_step`.
    optimizer : torch.optim.Optimizer
        Steps ``params``; its ``zero_grad(set_to_none=True)`` runs before every eager step.
    generator : torch.Generator, optional
        The masking generator (on the device).
    capture : bool
        Capture the step as a CUDA graph after ``warmup`` eager steps.
    warmup : int
        Eager steps before the capture, at least 1 (3, as PyTorch's examples use).
    step : callable
        The forward and backward of one batch, with :func:`train_step`'s signature (the trainer
        passes its own reference, so that a test can wrap it).

    Examples
    --------
    >>> from geomxai.train import TrainConfig, TrainForward, build_from_spec, model_spec
    >>> cfg = TrainConfig(regime="sgt", dataset="digits")
    >>> model = build_from_spec(model_spec(cfg, in_channels=1, num_classes=4, image_size=8))
    >>> params = list(model.parameters())
    >>> opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    >>> step = StaticStep(TrainForward(model), model, opt, config=cfg, params=params)
    >>> step(torch.rand(8, 1, 8, 8), torch.randint(0, 4, (8,))).shape  # TERMS
    torch.Size([5])
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        model: FeatureModel,
        optimizer: torch.optim.Optimizer,
        *,
        config: TrainConfig,
        params: list[torch.Tensor],
        generator: torch.Generator | None = None,
        no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        capture: bool = False,
        warmup: int = 3,
        step: Callable[..., torch.Tensor] = train_step,
    ):
        check(warmup, "warmup", Interval(Integral, 1, None))
        params = list(params)
        if capture:
            _check_capturable(optimizer, params)
        self.net, self.model, self.optimizer = net, model, optimizer
        self.config, self.params, self.generator, self.no_sync = config, params, generator, no_sync
        self.capture, self.warmup, self.step = bool(capture), warmup, step
        self._shape: tuple | None = None
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._eager_steps = 0
        self._side: torch.cuda.Stream | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._terms: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        """Whether the step has been captured (every call now replays the graph)."""
        return self._graph is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on ``x`` (n, c, h, w) and ``y`` (n,); returns ``TERMS`` (5,)."""
        if not self.capture:
            # Eager: the batch is stepped where it lies. Only a graph needs buffers that
            # outlive the call; the shape check stays, so both modes refuse the same batches.
            self._check(x, y)
            self._eager_steps += 1
            return self._run(x, y)
        self._load(x, y)
        if self._graph is None and self.capture and self._eager_steps >= self.warmup:
            # A graph captures on the current device's stream: on another device (cuda:1 in a
            # process whose current device is 0) the kernels would run outside the capture.
            with torch.cuda.device(self._x.device):
                self._capture()
        if self._graph is not None:
            with torch.cuda.device(self._x.device):
                self._graph.replay()
            # The graph's output is overwritten by the next replay; the caller gets its own.
            return self._terms.clone()
        self._eager_steps += 1
        return self._warmup_step()

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Remember the first batch's layout (eager) and refuse a batch of another."""
        if self._shape is None:
            self._shape = tuple((t.shape, t.dtype, t.device) for t in (x, y))
        batch = zip(("images", "labels"), (x, y), self._shape, strict=True)
        for name, new, (shape, dtype, device) in batch:
            if new.shape != shape or new.dtype != dtype or new.device != device:
                raise ValueError(
                    f"StaticStep steps batches of one shape; got {name} of shape "
                    f"{tuple(new.shape)} ({new.dtype}, {new.device}) after "
                    f"{tuple(shape)} ({dtype}, {device}); drop the last partial batch"
                )

    def _load(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Copy the batch into the buffers a graph reads (allocated like the first batch)."""
        self._check(x, y)
        if self._x is None:
            self._x, self._y = torch.empty_like(x), torch.empty_like(y)
        self._x.copy_(x)
        self._y.copy_(y)

    def _run(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """``zero_grad``, the step's passes and ``optimizer.step`` on ``x``, ``y`` (default:
        the buffers)."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.step(
            self.net,
            self.model,
            self._x if x is None else x,
            self._y if y is None else y,
            config=self.config,
            params=self.params,
            generator=self.generator,
            no_sync=self.no_sync,
        )
        self.optimizer.step()
        return terms

    def _warmup_step(self) -> torch.Tensor:
        current = torch.cuda.current_stream(self._x.device)
        if self._side is None:
            self._side = torch.cuda.Stream(self._x.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            terms = self._run()
        current.wait_stream(self._side)
        # Made on the side stream, read on the current one: its memory must not be reused on
        # the side stream before the current one is done with it.
        terms.record_stream(current)
        return terms

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        if self.generator is not None:
            if not hasattr(graph, "register_generator_state"):
                raise RuntimeError(
                    "capturing a step that draws from its own generator needs "
                    f"torch.cuda.CUDAGraph.register_generator_state; torch {torch.__version__} "
                    "lacks it. Upgrade torch or set cuda_graph=false"
                )
            graph.register_generator_state(self.generator)
        # The gradients are then made inside the graph, in its memory pool, and every replay's
        # backward writes them afresh; gradients left from the warm-up would be added to.
        self.optimizer.zero_grad(set_to_none=True)
        # "thread_local": a DataLoader's pin-memory thread may allocate pinned memory while the
        # step is being captured, which the default "global" mode would turn into an error.
        # The side stream, not torch's default capture stream: that one is made once per
        # process on whichever device was current at the first capture.
        if self._side is None:
            self._side = torch.cuda.Stream(self._x.device)
        with torch.cuda.graph(graph, stream=self._side, capture_error_mode="thread_local"):
            self._terms = self._run()
        self._graph = graph

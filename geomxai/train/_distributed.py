"""Multi-process training: the process group, global-batch whitening statistics, global losses.

geomxai trains data-parallel with ``torch.distributed`` (DDP), launched by ``torchrun``, which sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. The configured ``batch_size`` is the *global* batch;
each rank gets ``batch_size / world_size`` images of it. Whitening is a batch-level operation, so,
as ``nn.SyncBatchNorm`` does for BatchNorm, :class:`SyncGroupWhitening` all-reduces the per-rank
sums (``sum x`` and the within-group ``sum (x - mean)(x - mean)^T``) so that every rank whitens
with the statistics of the global batch, and the gradient flows through the all-reduce.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from geomxai.whitening import STATS_DTYPE, GroupWhitening, split_chunks, within_group_products

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a (possibly one-process) training job.

    Attributes
    ----------
    rank, world_size, local_rank : int
    device : torch.device
    owns_group : bool
        Whether :func:`setup_distributed` created the process group (and so must destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, metrics and progress bars."""
        return self.rank == 0


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """The device a ``TrainConfig.device`` names, checked against the machine.

    ``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``"cuda"`` maps to
    ``cuda:<local_rank>`` so that one config serves every rank of a job.

    Parameters
    ----------
    name : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (any name ``torch.device`` accepts).
    local_rank : int
        This process's rank on its node (``LOCAL_RANK`` under ``torchrun``), 0 alone.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        A name torch does not know, CUDA asked for where there is none, or a CUDA index past the
        machine's devices.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    from geomxai.train._config import ConfigError

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got device={name!r}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device must be available; got device={name!r} but CUDA is not")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device must be one of the {torch.cuda.device_count()} CUDA devices; "
                f"got device={str(device)!r}"
            )
    return device


def setup_distributed(device_name: str) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    With ``WORLD_SIZE`` unset or 1 this is a single-process run. Otherwise the process group is
    initialised (NCCL on CUDA, gloo on the CPU) unless the caller already did it.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    if world <= 1:
        return DistEnv(device=resolve_device(device_name))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank=local_rank)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        owns = True
    env = DistEnv(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        owns_group=owns,
    )
    log.info("rank %d of %d on %s", env.rank, env.world_size, env.device)
    return env


def teardown_distributed(env: DistEnv) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks.

    Every rank computes the same function of the global sum, so the gradient reaching one rank's
    contribution is the sum of all ranks' gradients with respect to that global sum; DDP's mean
    of the parameter gradients then gives the gradient of the mean loss (as in SyncBatchNorm).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over all ranks; the identity without a process group."""
    if not _group_active():
        return tensor
    return _AllReduceSum.apply(tensor)


class _AllGatherCat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.n = rank, tensor.shape[0]
        parts = [
            torch.empty_like(tensor, memory_format=torch.contiguous_format) for _ in range(world)
        ]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank computed a loss of the whole gathered batch: sum their gradients and keep
        # this rank's rows (a reduce-scatter, written as all-reduce + slice so gloo can run it).
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable concatenation over ranks along dim 0 (equal row counts per rank).

    Used for the decorrelation loss, whose correlation matrix is a statistic of the global batch.
    The identity without a process group.
    """
    if not _group_active():
        return tensor
    return _AllGatherCat.apply(tensor)


class SyncGroupWhitening(GroupWhitening):
    """:class:`~geomxai.whitening.GroupWhitening` with statistics of the global batch across ranks.

    In training mode with an initialised process group of more than one rank, the batch mean and
    the within-group covariances are computed from all-reduced sums over every rank's rows (two
    small differentiable all-reduces: ``sum x``, then the centred ``sum x x^T`` per group), so
    each rank whitens its rows exactly as one process would whiten the whole global batch, and
    the running statistics (updated from those global moments) stay identical on every rank. In
    eval mode, or without a process group, it is :class:`GroupWhitening` unchanged. The state
    dict is the same, so checkpoints load into a plain :class:`GroupWhitening`.

    Only the statistics step differs: it overrides :meth:`GroupWhitening.batch_moments`, and
    the parent's forward does the rest (the whitening matrices, their application, the running
    update, the affine map).
    """

    @classmethod
    def from_module(cls, module: GroupWhitening) -> SyncGroupWhitening:
        """A synchronised copy of ``module`` with its parameters and buffers."""
        new = cls(
            module.num_features,
            group_size=module.group_size,
            eps=module.eps,
            momentum=module.momentum,
            method=module.method,
            affine=module.affine,
            iters=module.iters,
        )
        new.load_state_dict(module.state_dict())
        ref = next(iter(module.buffers()))
        new.to(ref.device)
        new.train(module.training)
        return new

    def batch_moments(self, rows: torch.Tensor):
        """:meth:`GroupWhitening.batch_moments` over the rows of every rank.

        Without a process group of more than one rank, the parent's, unchanged.
        """
        if not _group_active():
            return super().batch_moments(rows)
        x64 = rows.to(STATS_DTYPE)
        # The global row count stays a device tensor: reading it on the host would cost a sync
        # per step, and ranks may hold different numbers of rows. It is at least 2 here (every
        # rank holds at least one row and there are at least two ranks). Made by a fill on the
        # device: torch.tensor(..., device=cuda) copies from pageable host memory, which waits
        # for the stream as a read does.
        m = torch.full((), float(rows.shape[0]), dtype=STATS_DTYPE, device=rows.device)
        dist.all_reduce(m, op=dist.ReduceOp.SUM)
        mean = all_reduce_sum(x64.sum(dim=0)) / m
        # Centre with the *global* mean before the product, as the local step does:
        # E[x x^T] - mean mean^T cancels catastrophically for features with a large mean.
        centred = x64 - mean
        products = all_reduce_sum(within_group_products(centred, self.layout))
        return mean, centred, split_chunks(products / m, self.layout), m


def convert_sync_whitening(module: nn.Module) -> nn.Module:
    """Replace every :class:`GroupWhitening` in ``module`` by a :class:`SyncGroupWhitening`.

    Returns ``module`` itself (changed in place) unless ``module`` is a GroupWhitening, in which
    case the replacement is returned, as ``nn.SyncBatchNorm.convert_sync_batchnorm`` does.
    """
    if isinstance(module, GroupWhitening) and not isinstance(module, SyncGroupWhitening):
        return SyncGroupWhitening.from_module(module)
    for name, child in module.named_children():
        new = convert_sync_whitening(child)
        if new is not child:
            setattr(module, name, new)
    return module


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place, non-differentiable reduction over ranks (metrics, flags); no-op in one process.

    ``op`` is ``"sum"``, ``"max"`` or ``"min"``.
    """
    if _group_active():
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def broadcast_object(value, *, src: int = 0):
    """``value`` from rank ``src`` on every rank (plain picklable data)."""
    if not _group_active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if _group_active():
        dist.barrier()

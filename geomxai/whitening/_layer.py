"""The decorrelated batch normalisation layer (DBN, Huang et al. 2018) and its folding helper."""

from __future__ import annotations

from numbers import Integral, Real

import torch
from torch import nn

from geomxai._checks import Interval, check
from geomxai.whitening._groups import (
    STATS_DTYPE,
    GroupLayout,
    apply_blocks,
    block_diagonal,
    check_choice,
    check_eps,
    check_iters,
    check_rows,
    from_rows,
    no_autocast,
    padded_moments,
    refuse_nonfinite,
    resolve_groups,
    split_chunks,
    to_rows,
    work_dtype,
)
from geomxai.whitening._newton_schulz import ns_inv_sqrt
from geomxai.whitening._zca import zca_matrices

WHITENING_METHODS = ("zca", "newton_schulz")


class GroupWhitening(nn.Module):
    """Group-wise whitening layer: batch statistics in training, running statistics in eval.

    In training mode each group of ``group_size`` consecutive features (channels for conv maps) is
    whitened with its batch mean and covariance, exactly as :func:`zca_whiten` (or
    :func:`newton_schulz_whiten`), and the running mean and running covariance are updated,
    ``running <- (1 - momentum) * running + momentum * batch``, with the unbiased (``m - 1``)
    batch covariance as BatchNorm does for its running variance. In eval mode the whitening matrix
    is computed from the running covariance by the same method, so the layer is a fixed affine map
    ``(x - running_mean) W^T`` that :meth:`whitening_matrix` exports and :func:`fold_into_linear`
    folds into a following ``nn.Linear``.

    The running *covariance* is kept, not a running average of whitening matrices (as the DBN code
    does): the whitening of the averaged covariance is a true whitening of the population estimate,
    while an average of whitening matrices is not the whitening of anything.

    Non-finite input: on the CPU every forward refuses NaN or inf in ``x`` with a ValueError that
    counts them, before any statistic is touched. On an accelerator the forward does not test
    ``x`` (reading the answer would be a host synchronisation in every training step); a
    non-finite batch then gives a non-finite output and loss, which the trainer already stops
    on, and a training batch whose statistics are not finite leaves ``running_mean``,
    ``running_cov`` and ``num_batches_tracked`` exactly as they were (selected on the device,
    no synchronisation). Either way one bad batch never poisons the running statistics.

    Parameters
    ----------
    num_features : int
        Width ``d`` (the size of dim 1 of the input).
    group_size : int or None
        Size of the groups, ``2 <= group_size <= d``; ``None`` for one group of all features. A
        remainder group of ``d % group_size`` features is whitened on its own.
    eps : float
        Added to the covariance eigenvalues (ZCA) or diagonal (Newton-Schulz); with
        ``iters="auto"`` in units of ``max(1, mean variance of the group)`` (see
        :func:`newton_schulz_whiten`).
    momentum : float or None
        Weight of the batch statistics in the running update, in (0, 1]; ``None`` keeps a
        cumulative average over all batches seen, as ``nn.BatchNorm`` does.
    method : {"zca", "newton_schulz"}
        Exact ZCA through a batched eigendecomposition, or IterNorm's Newton-Schulz iterations.
    affine : bool
        Learn a per-feature scale (init 1) and shift (init 0) applied after whitening.
    iters : int or "auto"
        Newton-Schulz iterations (``method="newton_schulz"`` only). ``"auto"`` runs them to the
        precision of the dtype the matrices are applied in, a count fixed by ``group_size`` and
        ``eps`` (:func:`ns_iterations`: 22 for groups of 16 at ``eps=1e-5`` and float32), which
        makes the layer ZCA without an eigendecomposition or a host synchronisation.

    Attributes
    ----------
    running_mean : Tensor (d,)
    running_cov : Tensor (num_groups, group_size, group_size)
        Running within-group covariances. When there is a remainder group of ``r`` features, its
        ``(r, r)`` covariance sits in the top-left corner of the last block; the rest of that block
        stays the identity and is never read.
    num_batches_tracked : Tensor ()
        Number of training batches seen.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> layer = GroupWhitening(8, group_size=4, momentum=1.0)
    >>> x = torch.randn(256, 8) @ torch.randn(8, 8)
    >>> y_train = layer(x)  # batch statistics; updates the running ones
    >>> _ = layer.eval()
    >>> y_eval = layer(x)  # running statistics: the unbiased covariance of that one batch
    >>> bool(torch.allclose(y_train, y_eval * (256 / 255) ** 0.5, atol=1e-3))
    True
    """

    def __init__(
        self,
        num_features: int,
        *,
        group_size: int | None = 16,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        method: str = "zca",
        affine: bool = False,
        iters: int | str = 5,
    ):
        super().__init__()
        check(num_features, "num_features", Interval(Integral, 2, None))
        layout = resolve_groups(num_features, group_size)
        check(momentum, "momentum", Interval(Real, 0, 1, closed="right"), None)
        self.num_features = num_features
        self.group_size = layout.group_size
        self.eps = check_eps(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.method = check_choice("method", method, WHITENING_METHODS)
        self.affine = bool(affine)
        self.iters = check_iters(iters)
        self._layout = layout

        g = layout.group_size
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_cov", torch.eye(g).repeat(layout.num_groups, 1, 1))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    @property
    def layout(self) -> GroupLayout:
        """How the features split into groups."""
        return self._layout

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, group_size={self.group_size}, eps={self.eps}, "
            f"momentum={self.momentum}, method={self.method!r}, affine={self.affine}"
            + (f", iters={self.iters!r}" if self.method == "newton_schulz" else "")
        )

    def batch_moments(
        self, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], int | torch.Tensor]:
        """The statistics a training-mode forward whitens with, from the batch's (m, d) rows.

        The one step a subclass overrides to take them over more rows than it holds:
        :class:`geomxai.train.SyncGroupWhitening` sums them over every process of a
        data-parallel job. The forward applies the whitening of ``covs`` to ``centred`` and
        updates the running statistics from ``mean``, ``covs`` and ``count``. Called with
        autocast off; everything returned is float64 and, in ``centred`` and ``covs``,
        differentiable with respect to ``rows``.

        Parameters
        ----------
        rows : Tensor (m, d)
            The input with every spatial position of a conv map as a row (channels as features).

        Returns
        -------
        mean : Tensor (d,), float64
        centred : Tensor (m, d), float64
            ``rows - mean``.
        covs : list of Tensor (count, size, size), float64
            Within-group covariances with ``count`` in the denominator (biased), as the chunks of
            the layout: the full groups, then the remainder group if any.
        count : int or Tensor ()
            Number of rows the statistics are over; a device tensor where reading it on the host
            would cost a synchronisation.

        Raises
        ------
        ValueError
            Fewer than 2 rows: a batch covariance needs at least 2.
        """
        if rows.shape[0] < 2:
            raise ValueError(
                "GroupWhitening needs more than 1 value per feature in training mode "
                f"(batch statistics); got input rows of shape {tuple(rows.shape)}"
            )
        mean, centred, cov = padded_moments(rows, self._layout)
        return mean, centred, split_chunks(cov, self._layout), rows.shape[0]

    def _matrices(
        self, covs: list[torch.Tensor], *, dtype: torch.dtype = STATS_DTYPE
    ) -> list[torch.Tensor]:
        """Whitening matrices of the covariance chunks; ``dtype`` is the precision target of
        ``iters="auto"`` (the dtype the matrices are applied in)."""
        if self.method == "zca":
            return zca_matrices(covs, eps=self.eps)
        return [ns_inv_sqrt(c, eps=self.eps, iters=self.iters, target_dtype=dtype) for c in covs]

    def _running_covs(self) -> list[torch.Tensor]:
        """The running covariance split like the layout's chunks, in float64."""
        lay = self._layout
        cov = self.running_cov.to(STATS_DTYPE)
        out = []
        if lay.num_full:
            out.append(cov[: lay.num_full])
        if lay.remainder:
            out.append(cov[lay.num_full :, : lay.remainder, : lay.remainder])
        return out

    @torch.no_grad()
    def _update_running(
        self, mean: torch.Tensor, covs: list[torch.Tensor], m: int | torch.Tensor
    ) -> None:
        # A batch whose statistics are not finite (NaN/inf input, which the forward tests only
        # on the CPU, or an overflow) never reaches the running ones. The update is selected on
        # the device with torch.where, so the guard costs no host synchronisation.
        ok = torch.isfinite(mean).all()
        for c in covs:
            ok = ok & torch.isfinite(c).all()
        self.num_batches_tracked.add_(ok.to(self.num_batches_tracked.dtype))
        if self.momentum is None:
            w = 1.0 / float(self.num_batches_tracked.clamp_min(1).item())
        else:
            w = self.momentum
        unbiased = m / (m - 1)

        def update(target: torch.Tensor, batch: torch.Tensor) -> None:
            blended = torch.lerp(target, batch.to(target.dtype), w)
            target.copy_(torch.where(ok, blended, target))

        update(self.running_mean, mean)
        lay = self._layout
        chunks = iter(covs)
        if lay.num_full:
            update(self.running_cov[: lay.num_full], next(chunks) * unbiased)
        if lay.remainder:
            r = lay.remainder
            update(self.running_cov[lay.num_full :, :r, :r], next(chunks) * unbiased)

    def _nonfinite_stats(self, stats: dict[str, torch.Tensor]) -> list[str]:
        return [
            name
            for name, value in stats.items()
            if isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Running statistics with NaN or inf would whiten every eval input to NaN: refused
        # when loaded, naming the buffer (training never stores such a batch's statistics).
        names = [prefix + n for n in ("running_mean", "running_cov")]
        bad = self._nonfinite_stats({n: state_dict[n] for n in names if n in state_dict})
        if bad:
            raise ValueError(
                f"cannot load GroupWhitening statistics: {', '.join(bad)} hold NaN or inf "
                "values, which would whiten every input to NaN in eval mode; the state_dict "
                "was damaged or written by a diverged run"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten ``x`` of shape (n, d) or (n, d, *spatial); returns the same shape and dtype."""
        rows = to_rows(x)
        check_rows(rows, self.num_features)
        # The CPU refuses NaN/inf here; an accelerator does not look (see the class docstring).
        refuse_nonfinite(rows, on_accelerator=False)
        if self.training:
            with no_autocast(x.device):
                mean, centred, covs, count = self.batch_moments(rows)
                dtype = work_dtype(x.dtype)
                mats = self._matrices(covs, dtype=dtype)
                y = apply_blocks(centred, mats, self._layout, dtype)
            self._update_running(mean.detach(), [c.detach() for c in covs], count)
        else:
            with no_autocast(x.device):
                dtype = work_dtype(x.dtype)
                with torch.no_grad():
                    mats = self._matrices(self._running_covs(), dtype=dtype)
                centred = rows.to(dtype) - self.running_mean.to(dtype)
                y = apply_blocks(centred, mats, self._layout, dtype)
        y = from_rows(y.to(x.dtype), x.shape)
        if self.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y * self.weight.view(shape).to(y.dtype) + self.bias.view(shape).to(y.dtype)
        return y

    @torch.no_grad()
    def whitening_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-time whitening as one block-diagonal matrix and a mean, in float64.

        Eval-mode output (before the optional affine) is ``(x - mean) @ matrix.T``. With
        ``iters="auto"`` the matrix is run to float64's precision (one step more than a float32
        eval forward takes, which it matches to float32's).

        Returns
        -------
        matrix : Tensor (d, d), float64
            Block-diagonal: one (group_size, group_size) block per group.
        mean : Tensor (d,), float64
            The running mean.
        """
        mats = self._matrices(self._running_covs())
        return block_diagonal(mats), self.running_mean.to(STATS_DTYPE).clone()


@torch.no_grad()
def fold_into_linear(whitening: GroupWhitening, linear: nn.Linear) -> nn.Linear:
    """A new ``nn.Linear`` equal to ``linear(whitening(x))`` with ``whitening`` in eval mode.

    With ``A = diag(gamma) M`` and ``c = beta - A mu`` (``gamma = 1``, ``beta = 0`` without affine),
    the result has weight ``W_lin A`` and bias ``W_lin c + b_lin``, computed in float64 and cast to
    the dtype of ``linear``. Neither argument is modified; the folded layer is a snapshot of the
    current running statistics.

    Parameters
    ----------
    whitening : GroupWhitening
        Applied to (n, d) features (not conv maps).
    linear : nn.Linear
        With ``in_features == whitening.num_features``.

    Returns
    -------
    nn.Linear
        ``in_features`` and ``out_features`` of ``linear``, always with a bias, on its device.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> w, head = GroupWhitening(8, group_size=4), nn.Linear(8, 3)
    >>> _ = w(torch.randn(64, 8) @ torch.randn(8, 8))
    >>> _ = w.eval()
    >>> x = torch.randn(5, 8)
    >>> torch.allclose(fold_into_linear(w, head)(x), head(w(x)), atol=1e-5)
    True
    """
    if not isinstance(whitening, GroupWhitening):
        raise TypeError(f"whitening must be a GroupWhitening; got {type(whitening).__name__}")
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
    if linear.in_features != whitening.num_features:
        raise ValueError(
            "linear.in_features must equal whitening.num_features; "
            f"got in_features={linear.in_features} for num_features={whitening.num_features}"
        )
    matrix, mean = whitening.whitening_matrix()
    dev = linear.weight.device
    matrix, mean = matrix.to(dev), mean.to(dev)
    if whitening.affine:
        gamma = whitening.weight.to(dev, STATS_DTYPE)
        beta = whitening.bias.to(dev, STATS_DTYPE)
    else:
        gamma = torch.ones_like(mean)
        beta = torch.zeros_like(mean)
    a = gamma[:, None] * matrix
    c = beta - a @ mean
    w_lin = linear.weight.to(STATS_DTYPE)
    b_lin = (
        linear.bias.to(STATS_DTYPE) if linear.bias is not None else torch.zeros_like(w_lin[:, 0])
    )
    folded = nn.Linear(
        linear.in_features, linear.out_features, bias=True, device=dev, dtype=linear.weight.dtype
    )
    folded.weight.copy_(w_lin @ a)
    folded.bias.copy_(w_lin @ c + b_lin)
    return folded

"""Datasets that need no files: scikit-learn's digits and the synthetic ``blocks`` set."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from geomxai.data._base import DatasetBundle


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> DatasetBundle:
    """scikit-learn's embedded 8x8 handwritten digits (1797 images), split with a seed."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images).to(torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return DatasetBundle(
        name="digits",
        train=TensorDataset(images[train], labels[train]),
        test=TensorDataset(images[test], labels[test]),
        classes=tuple(str(c) for c in bunch.target_names),
        input_shape=(1, 8, 8),
        source="sklearn",
    )


BLOCK_CLASSES = ("bar", "column", "diagonal", "ring")
_CELL = 8
_GRID = 4


def _shapes() -> torch.Tensor:
    """The four class shapes, 6x6 binary patterns with 10 to 20 lit pixels."""
    s = torch.zeros(4, 6, 6)
    s[0, 2:4, :] = 1  # horizontal bar
    s[1, :, 2:4] = 1  # vertical bar
    idx = torch.arange(6)
    s[2, idx, idx] = 1  # diagonal, thickened
    s[2, idx[:-1], idx[1:]] = 1
    s[3, 0, :] = s[3, -1, :] = s[3, :, 0] = s[3, :, -1] = 1  # ring
    return s


def make_blocks(n: int, *, seed: int, noise: float = 0.05) -> tuple[torch.Tensor, ...]:
    """Synthetic 32x32 grey images whose class evidence sits in one known 8x8 cell.

    Each image is a 4x4 grid of 8x8 cells over a noisy background. One cell, chosen at random,
    holds the class shape (a bar, a column, a diagonal or a ring); three other cells hold
    distractors: random patterns with as many lit pixels as a class shape, so brightness alone
    says nothing about the class. The ground-truth mask is the evidence cell.

    Returns
    -------
    images : Tensor (n, 1, 32, 32) in [0, 1]
    labels : Tensor (n,)
    masks : Tensor (n, 32, 32) of bool

    Examples
    --------
    >>> x, y, m = make_blocks(8, seed=0)
    >>> x.shape, int(m[0].sum())
    (torch.Size([8, 1, 32, 32]), 64)
    """
    g = torch.Generator().manual_seed(seed)
    shapes = _shapes()
    side = _CELL * _GRID
    images = (0.1 + noise * torch.randn(n, side, side, generator=g)).clamp_(0, 1)
    masks = torch.zeros(n, side, side, dtype=torch.bool)
    labels = torch.randint(0, len(shapes), (n,), generator=g)
    lit = int(shapes.sum((1, 2)).float().mean())
    for i in range(n):
        cells = torch.randperm(_GRID * _GRID, generator=g)[:4]
        for k, cell in enumerate(cells.tolist()):
            r, c = divmod(cell, _GRID)
            r, c = r * _CELL + 1, c * _CELL + 1
            if k == 0:
                pattern = shapes[labels[i]]
                masks[i, r - 1 : r - 1 + _CELL, c - 1 : c - 1 + _CELL] = True
            else:
                pattern = torch.zeros(36)
                pattern[torch.randperm(36, generator=g)[:lit]] = 1
                pattern = pattern.view(6, 6)
            brightness = 0.7 + 0.3 * torch.rand((), generator=g)
            patch = images[i, r : r + 6, c : c + 6]
            images[i, r : r + 6, c : c + 6] = torch.where(pattern > 0, brightness, patch)
    return images.unsqueeze(1), labels, masks


def load_blocks(*, n_train: int = 4000, n_test: int = 1000, seed: int = 0) -> DatasetBundle:
    """The ``blocks`` localisation set (see :func:`make_blocks`), with test-set masks."""
    x_train, y_train, _ = make_blocks(n_train, seed=seed)
    x_test, y_test, m_test = make_blocks(n_test, seed=seed + 1)
    return DatasetBundle(
        name="blocks",
        train=TensorDataset(x_train, y_train),
        test=TensorDataset(x_test, y_test),
        classes=BLOCK_CLASSES,
        input_shape=(1, 32, 32),
        source="synthetic",
        test_masks=m_test,
    )


def _tabular(name: str, bunch, *, test_fraction: float, seed: int) -> DatasetBundle:
    """A scikit-learn table split with a seed and standardised with the training split's moments."""
    x = torch.from_numpy(bunch.data).to(torch.float64)
    y = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    # Standardised with the training split alone, so no test statistic leaks into the inputs;
    # features on scales 1e-3 to 1e3 (breast cancer) would otherwise swamp an MLP and make a
    # masking fill meaningless. float64 for the moments, float32 inputs as the models compute.
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-12)
    x = ((x - mean) / std).to(torch.float32)
    return DatasetBundle(
        name=name,
        train=TensorDataset(x[train], y[train]),
        test=TensorDataset(x[test], y[test]),
        classes=tuple(str(c) for c in bunch.target_names),
        input_shape=(x.shape[1],),
        source="sklearn",
    )


def load_breast_cancer(*, test_fraction: float = 0.25, seed: int = 0) -> DatasetBundle:
    """scikit-learn's Wisconsin breast cancer table: 569 rows, 30 features, 2 classes, embedded.

    Features are standardised with the training split's mean and standard deviation. A quarter
    of the rows is the test split (142), so the whole test split as a probe has more than twice
    the samples of a 64-unit feature layer (the built-in ``mlp``'s), which its spectrum and
    whitening estimates need.

    Examples
    --------
    >>> bundle = load_breast_cancer()
    >>> bundle.input_shape, bundle.kind, bundle.classes, len(bundle.train), len(bundle.test)
    ((30,), 'tabular', ('malignant', 'benign'), 427, 142)
    """
    from sklearn.datasets import load_breast_cancer as sk_breast_cancer

    return _tabular("breast-cancer", sk_breast_cancer(), test_fraction=test_fraction, seed=seed)


def load_wine(*, test_fraction: float = 0.2, seed: int = 0) -> DatasetBundle:
    """scikit-learn's wine table: 178 rows, 13 features, 3 classes, embedded; standardised."""
    from sklearn.datasets import load_wine as sk_wine

    return _tabular("wine", sk_wine(), test_fraction=test_fraction, seed=seed)

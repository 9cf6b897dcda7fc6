"""What every dataset loader returns, and the error for data that is not there."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where geomxai looked; the message says where and how to get them."""


@dataclass(frozen=True)
class DatasetBundle:
    """Train and test splits of one dataset, with what models and reports need to know about it.

    Attributes
    ----------
    name : str
        Registry name (``"fashion-mnist"``, ``"digits"``, ...).
    train, test : torch.utils.data.Dataset
        Items are ``(image, label)``: a float tensor (c, h, w) with values in [0, 1] and an int;
        for a table (``breast-cancer``, ``wine``) ``(row, label)``, a float tensor (d,) of
        standardised features.
    classes : tuple of str
        Class names, indexed by label.
    input_shape : tuple of int
        ``(channels, height, width)`` for images, ``(features,)`` for a table.
    source : str
        Where the data came from (a directory, ``"sklearn"``, ``"synthetic"``), for reports.
    test_masks : Tensor (n_test, h, w) of bool, optional
        Ground-truth evidence masks of the test images (the ``blocks`` set only).
    """

    name: str
    train: Dataset
    test: Dataset
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    source: str
    test_masks: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def image_size(self) -> int:
        return self.input_shape[1]

    @property
    def kind(self) -> str:
        """``"image"`` for (c, h, w) inputs, ``"sequence"`` for (c, t), ``"tabular"`` for (d,)."""
        return {3: "image", 2: "sequence", 1: "tabular"}[len(self.input_shape)]


def dataset_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of a dataset as two tensors (n, c, h, w) and (n,).

    Tensor-backed datasets (``TensorDataset`` and ``Subset`` of one) are sliced without a Python
    loop over items; other datasets are read item by item.
    """
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, torch.utils.data.Subset):
        images, labels = dataset_tensors(dataset.dataset)
        index = torch.as_tensor(dataset.indices, dtype=torch.long)
        return images[index], labels[index]
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; expected at least one (image, label) item")
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([torch.as_tensor(x) for x, _ in items])
    labels = torch.as_tensor([int(y) for _, y in items], dtype=torch.long)
    return images, labels

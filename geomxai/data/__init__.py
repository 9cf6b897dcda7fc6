"""Datasets: real ones through torchvision, scikit-learn's digits and tables, the synthetic ``blocks``
set, and :func:`as_tensors` for the data users bring (a Dataset, a DataLoader, tensors)."""

from geomxai.data._base import DatasetBundle, DatasetNotFoundError, dataset_tensors
from geomxai.data._offline import (
    BLOCK_CLASSES,
    load_blocks,
    load_breast_cancer,
    load_digits,
    load_wine,
    make_blocks,
)
from geomxai.data._registry import DATASETS, TABLES, load_dataset
from geomxai.data._tensors import as_tensors
from geomxai.data._torchvision import (
    data_root,
    load_caltech101,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
)

__all__ = [
    "BLOCK_CLASSES",
    "DATASETS",
    "DatasetBundle",
    "DatasetNotFoundError",
    "TABLES",
    "as_tensors",
    "data_root",
    "dataset_tensors",
    "load_blocks",
    "load_breast_cancer",
    "load_caltech101",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_wine",
    "make_blocks",
]

"""One entry point for every dataset."""

from __future__ import annotations

from geomxai._hints import close_matches
from geomxai.data._base import DatasetBundle
from geomxai.data._offline import load_blocks, load_breast_cancer, load_digits, load_wine
from geomxai.data._torchvision import (
    load_caltech101,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
)

DATASETS = {
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "caltech101": load_caltech101,
    "digits": load_digits,
    "blocks": load_blocks,
    "breast-cancer": load_breast_cancer,
    "wine": load_wine,
}
TABLES = frozenset({"breast-cancer", "wine"})
"""The datasets whose samples are rows of features, not images."""
_NEEDS_NO_FILES = {"digits", "blocks", *TABLES}


def load_dataset(name: str, *, root=None, download: bool = False, **options) -> DatasetBundle:
    """Train and test splits of a dataset by name.

    Parameters
    ----------
    name : str
        ``fashion-mnist``, ``mnist``, ``cifar10``, ``caltech101``, ``digits``, ``blocks``,
        ``imagefolder:PATH``, or the tables ``breast-cancer`` and ``wine`` (scikit-learn's,
        embedded; rows of standardised features, for models on tabular inputs).
    root : path, optional
        Where to look for files first; default ``$GEOMXAI_DATA``, else ``~/.cache/geomxai/data``.
        Fashion-MNIST is also looked for where the Debian package puts it.
    download : bool
        Let torchvision download what is missing. Off by default: nothing is fetched unless asked.
    **options
        Passed to the loader (``image_size``, ``seed``, ``n_train``, ...).

    Raises
    ------
    DatasetNotFoundError
        The files are not there; the message lists where geomxai looked and how to get them.

    Examples
    --------
    >>> bundle = load_dataset("digits")
    >>> bundle.input_shape, bundle.num_classes
    ((1, 8, 8), 10)
    """
    if name.startswith("imagefolder:"):
        return load_image_folder(name.split(":", 1)[1], **options)
    if name not in DATASETS:
        close = close_matches(name, DATASETS)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join([*sorted(DATASETS), "imagefolder:PATH"])
        raise ValueError(f"unknown dataset {name!r}; known: {known}{hint}")
    if name in _NEEDS_NO_FILES:
        return DATASETS[name](**options)
    return DATASETS[name](root=root, download=download, **options)

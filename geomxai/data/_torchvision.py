"""Real datasets read through torchvision's own classes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch.utils.data import TensorDataset
from torchvision import transforms

from geomxai.data._base import DatasetBundle, DatasetNotFoundError

log = logging.getLogger(__name__)

DEBIAN_DIRS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
_MNIST_LIKE = {
    "fashion-mnist": torchvision.datasets.FashionMNIST,
    "mnist": torchvision.datasets.MNIST,
}
_HOW_TO_GET = {
    "fashion-mnist": "install the Debian package (as root: apt-get install dataset-fashion-mnist), "
    "put the four IDX files in $GEOMXAI_DATA/fashion-mnist, or pass download=True",
    "mnist": "put the four IDX files in $GEOMXAI_DATA/mnist, or pass download=True",
    "cifar10": "put cifar-10-batches-py in $GEOMXAI_DATA, or pass download=True",
    "caltech101": "put caltech101/101_ObjectCategories in $GEOMXAI_DATA, or pass download=True",
}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where geomxai keeps and looks for data: ``root``, else ``$GEOMXAI_DATA``, else ~/.cache."""
    if root is not None:
        return Path(root)
    if os.environ.get("GEOMXAI_DATA"):
        return Path(os.environ["GEOMXAI_DATA"])
    return Path.home() / ".cache" / "geomxai" / "data"


def _missing(name: str, looked: list[Path]) -> DatasetNotFoundError:
    where = "\n  ".join(str(p) for p in looked)
    return DatasetNotFoundError(
        f"dataset {name!r} not found. geomxai looked in:\n  {where}\nTo get it: {_HOW_TO_GET[name]}."
    )


def _images_tensor(data: torch.Tensor) -> torch.Tensor:
    """uint8 (n, h, w) or (n, h, w, c) to float (n, c, h, w) in [0, 1]."""
    data = torch.as_tensor(data)
    data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    return data.to(torch.float32).div_(255.0).contiguous()


def _mnist_like(name: str, root: Path, download: bool) -> DatasetBundle:
    cls = _MNIST_LIKE[name]
    # torchvision wants ROOT/<ClassName>/raw/<file> uncompressed. Our own cache dir holds that layout;
    # flat directories of .gz files (the Debian package, $GEOMXAI_DATA/<name>) are extracted into it.
    raw = root / cls.__name__ / "raw"
    flat_dirs = [root / name, root, DEBIAN_DIRS[name]]
    looked = [raw, *flat_dirs]

    def complete(directory: Path, suffix: str) -> bool:
        return all((directory / (Path(url).stem + suffix)).is_file() for url, _ in cls.resources)

    source = raw
    if not complete(raw, ""):
        for directory in flat_dirs:
            if complete(directory, ".gz"):
                raw.mkdir(parents=True, exist_ok=True)
                for url, _ in cls.resources:
                    torchvision.datasets.utils.extract_archive(directory / url, raw)
                source = directory
                log.info("extracted %s from %s into %s", name, directory, raw)
                break
        else:
            if not download:
                raise _missing(name, looked)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as err:  # torchvision's "Dataset not found" or a failed integrity check
        raise _missing(name, looked) from err
    return DatasetBundle(
        name=name,
        train=TensorDataset(_images_tensor(train.data), train.targets.clone()),
        test=TensorDataset(_images_tensor(test.data), test.targets.clone()),
        classes=tuple(train.classes),
        input_shape=(1, 28, 28),
        source=str(source),
    )


def load_fashion_mnist(*, root=None, download: bool = False) -> DatasetBundle:
    """Fashion-MNIST (Xiao et al. 2017), 60k + 10k grey 28x28 images, 10 classes."""
    return _mnist_like("fashion-mnist", data_root(root), download)


def load_mnist(*, root=None, download: bool = False) -> DatasetBundle:
    """MNIST, 60k + 10k grey 28x28 digits."""
    return _mnist_like("mnist", data_root(root), download)


def load_cifar10(*, root=None, download: bool = False) -> DatasetBundle:
    """CIFAR-10, 50k + 10k colour 32x32 images, 10 classes."""
    root = data_root(root)
    try:
        train = torchvision.datasets.CIFAR10(str(root), train=True, download=download)
        test = torchvision.datasets.CIFAR10(str(root), train=False, download=download)
    except RuntimeError as err:
        raise _missing("cifar10", [root / "cifar-10-batches-py"]) from err
    return DatasetBundle(
        name="cifar10",
        train=TensorDataset(
            _images_tensor(torch.from_numpy(train.data)), torch.tensor(train.targets)
        ),
        test=TensorDataset(_images_tensor(torch.from_numpy(test.data)), torch.tensor(test.targets)),
        classes=tuple(train.classes),
        input_shape=(3, 32, 32),
        source=str(root),
    )


def _resized(image_size: int):
    return transforms.Compose(
        [
            transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
        ]
    )


def load_image(path: str):
    """One image file as an RGB PIL image; a file that is not a readable image (damaged, or
    truncated: a half-written file, a header with no pixel data after it), or whose header
    claims more pixels than PIL reads safely (``PIL.Image.MAX_IMAGE_PIXELS`` times two: a
    decompression bomb), is a ValueError naming the file.

    Module level, so DataLoader worker processes can pickle it.
    """
    from PIL import Image

    # Opened outside the decoding ``try``: a file that cannot be opened (gone, no permission)
    # is an OSError that names it already and is not a damaged image.
    with open(path, "rb") as fh:
        try:
            image = Image.open(fh)
            return image.convert("RGB")
        except Image.DecompressionBombError as err:
            raise ValueError(
                f"{path!r} is too large to read safely ({err}); resize it or remove it from "
                "the folder"
            ) from err
        # PIL decodes lazily: a truncated file opens and fails in convert() with a bare
        # OSError ("image file is truncated") that names no file.
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(
                f"{path!r} is not a readable image ({err}); it is damaged or cut short: "
                "replace it or remove it from the folder"
            ) from err


def _split(dataset, test_fraction: float, seed: int):
    n_test = max(1, int(round(len(dataset) * test_fraction)))
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.random_split(dataset, [len(dataset) - n_test, n_test], generator)


def load_caltech101(
    *,
    root=None,
    download: bool = False,
    image_size: int = 128,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetBundle:
    """Caltech-101 resized to ``image_size``; a seeded random split (it ships without one)."""
    root = data_root(root)
    try:
        full = torchvision.datasets.Caltech101(
            str(root), target_type="category", transform=_resized(image_size), download=download
        )
    except RuntimeError as err:
        raise _missing("caltech101", [root / "caltech101"]) from err
    train, test = _split(full, test_fraction, seed)
    return DatasetBundle(
        name="caltech101",
        train=train,
        test=test,
        classes=tuple(full.categories),
        input_shape=(3, image_size, image_size),
        source=str(root),
    )


def load_image_folder(
    path, *, image_size: int = 64, test_fraction: float = 0.2, seed: int = 0
) -> DatasetBundle:
    """A folder of class sub-folders (CUB-200 birds, Tiny ImageNet, your own images).

    ``path/train`` and ``path/test`` (or ``val``) are used as the splits when present; otherwise the
    images are split at random with a seed.
    """
    if isinstance(path, str) and not path.strip():
        # Path("") is the current folder, which is never what `imagefolder:` meant.
        raise ValueError(
            "imagefolder: needs the folder after the colon (imagefolder:PATH, a folder of class "
            "sub-folders); got an empty path"
        )
    path = Path(path)
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"image folder {str(path)!r} does not exist; expected a directory of class sub-folders"
        )
    transform = _resized(image_size)
    test_dir = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
    if (path / "train").is_dir() and test_dir is not None:
        train = torchvision.datasets.ImageFolder(
            str(path / "train"), transform=transform, loader=load_image
        )
        test = torchvision.datasets.ImageFolder(
            str(test_dir), transform=transform, loader=load_image
        )
        classes = train.classes
    else:
        try:
            full = torchvision.datasets.ImageFolder(
                str(path), transform=transform, loader=load_image
            )
        except FileNotFoundError as err:
            raise DatasetNotFoundError(f"no images under {str(path)!r}: {err}") from err
        train, test = _split(full, test_fraction, seed)
        classes = full.classes
    return DatasetBundle(
        name=f"imagefolder:{path}",
        train=train,
        test=test,
        classes=tuple(classes),
        input_shape=(3, image_size, image_size),
        source=str(path),
    )

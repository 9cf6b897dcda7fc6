"""Each loader on local files, the offline sets, and the missing-dataset error."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from _internals import data_torchvision as tv_loaders

from geomxai.data import (
    DatasetNotFoundError,
    dataset_tensors,
    load_dataset,
    make_blocks,
)

FILES = {
    "train-images-idx3-ubyte": (0x803, (12, 28, 28)),
    "train-labels-idx1-ubyte": (0x801, (12,)),
    "t10k-images-idx3-ubyte": (0x803, (5, 28, 28)),
    "t10k-labels-idx1-ubyte": (0x801, (5,)),
}


def write_idx_gz(directory: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four IDX files of a tiny MNIST-like set, gzipped, and return their arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, (magic, shape) in FILES.items():
        high = 10 if len(shape) == 1 else 256
        data = rng.integers(0, high, size=shape, dtype=np.uint8)
        header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in shape)
        with gzip.open(directory / f"{name}.gz", "wb") as fh:
            fh.write(header + data.tobytes())
        arrays[name] = data
    return arrays


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Hide the Debian package's directory so only the test's own files count."""
    monkeypatch.setattr(
        tv_loaders, "DEBIAN_DIRS", {k: tmp_path / "absent" for k in tv_loaders.DEBIAN_DIRS}
    )


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_mnist_like_from_flat_gz_files(tmp_path, monkeypatch, no_debian, name):
    arrays = write_idx_gz(tmp_path / name)
    monkeypatch.setenv("GEOMXAI_DATA", str(tmp_path))
    bundle = load_dataset(name)
    x, y = dataset_tensors(bundle.train)
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0].numpy() * 255, arrays["train-images-idx3-ubyte"], atol=1e-3)
    np.testing.assert_array_equal(y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert len(bundle.test) == 5
    # A second load reads the extracted copy in torchvision's layout.
    assert len(load_dataset(name).train) == 12


def test_explicit_root_wins(tmp_path, no_debian):
    write_idx_gz(tmp_path / "mine" / "fashion-mnist", seed=1)
    bundle = load_dataset("fashion-mnist", root=tmp_path / "mine")
    assert len(bundle.train) == 12


def test_missing_dataset_names_where_it_looked(tmp_path, monkeypatch, no_debian):
    monkeypatch.setenv("GEOMXAI_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message


def test_cifar10_missing_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        load_dataset("cifar10", root=tmp_path)


def test_unknown_dataset_suggests(tmp_path):
    with pytest.raises(ValueError, match="did you mean fashion-mnist"):
        load_dataset("fashion-mnst")


def test_digits_always_available():
    bundle = load_dataset("digits")
    x, y = dataset_tensors(bundle.test)
    assert bundle.input_shape == (1, 8, 8)
    assert len(bundle.train) + len(bundle.test) == 1797
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert set(y.tolist()) <= set(range(10))


def test_blocks_masks_mark_the_class_evidence():
    x, y, masks = make_blocks(64, seed=3)
    assert x.shape == (64, 1, 32, 32) and masks.shape == (64, 32, 32)
    assert (masks.sum((1, 2)) == 64).all()  # exactly one 8x8 cell per image
    # The evidence cell is brighter than the background on average.
    inside = (x[:, 0] * masks).sum() / masks.sum()
    outside = (x[:, 0] * ~masks).sum() / (~masks).sum()
    assert inside > outside
    # Deterministic under the seed.
    x2, y2, m2 = make_blocks(64, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(masks, m2)


def test_blocks_bundle_has_test_masks():
    bundle = load_dataset("blocks", n_train=16, n_test=8)
    assert bundle.test_masks.shape == (8, 32, 32)
    assert bundle.classes == ("bar", "column", "diagonal", "ring")


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 30), color=(i * 40, 10, 200)).save(
                tmp_path / "imgs" / cls / f"{i}.png"
            )
    bundle = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", image_size=16)
    x, y = bundle.train[0]
    assert x.shape == (3, 16, 16) and bundle.classes == ("cat", "dog")
    assert len(bundle.train) + len(bundle.test) == 10


def test_image_folder_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
    reason="dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOMXAI_DATA", str(tmp_path))
    bundle = load_dataset("fashion-mnist")
    assert len(bundle.train) == 60000 and len(bundle.test) == 10000
    assert bundle.classes[0] == "T-shirt/top"

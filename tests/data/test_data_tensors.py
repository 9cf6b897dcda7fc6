"""as_tensors (what users bring as data) and the embedded tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from geomxai.data import as_tensors, load_breast_cancer, load_dataset, load_wine


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.rand(10, 2, 4, 4, generator=g), torch.arange(10) % 3


def test_every_container_gives_the_same_tensors(pair):
    x, y = pair
    for data in (
        (x, y),
        [x, y],
        (x.numpy(), y.numpy()),
        TensorDataset(x, y),
        DataLoader(TensorDataset(x, y), batch_size=3),
    ):
        got_x, got_y = as_tensors(data)
        assert torch.equal(got_x, x) and torch.equal(got_y, y), type(data)


def test_limit_reads_only_the_first_samples(pair):
    x, y = pair
    read = []

    class Counting(Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            read.append(i)
            return x[i], y[i]

    got_x, got_y = as_tensors(Counting(), limit=4)
    assert read == [0, 1, 2, 3]
    assert torch.equal(got_x, x[:4]) and got_y.tolist() == y[:4].tolist()
    got_x, _ = as_tensors(DataLoader(TensorDataset(x, y), batch_size=3), limit=4)
    assert torch.equal(got_x, x[:4])


def test_inputs_alone_or_labels_false_give_no_labels(pair):
    x, y = pair
    assert as_tensors(x)[1] is None
    assert as_tensors((x, y), labels=False)[1] is None
    assert as_tensors(DataLoader(x, batch_size=4))[1] is None


def test_pil_images_uint8_and_mappings(pair):
    pixels = (np.arange(48, dtype=np.uint8) * 5).reshape(4, 4, 3)

    class Mapped(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": Image.fromarray(pixels), "label": i}

    x, y = as_tensors(Mapped())
    assert x.shape == (2, 3, 4, 4) and y.tolist() == [0, 1]
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), pixels / 255.0, rtol=1e-6)
    x8, _ = as_tensors(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0))
    assert x8.dtype == torch.float32 and float(x8.max()) == pytest.approx(235 / 255)


def test_a_transform_applies_to_each_sample(pair):
    x, y = pair
    got, _ = as_tensors((x, y), transform=lambda t: 2 * t)
    assert torch.equal(got, 2 * x)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ("digits", TypeError, "load_dataset"),
        (object(), TypeError, "must be a Dataset, a DataLoader"),
        ((torch.zeros(3, 2), torch.zeros(2)), ValueError, "one label per sample"),
        ((torch.zeros(2, 2), torch.tensor([0.5, 1.0])), ValueError, "integer class indices"),
        (TensorDataset(torch.zeros(0, 2)), ValueError, "the data is empty"),
    ],
)
def test_bad_data_is_refused_with_the_fix(data, error, match):
    with pytest.raises(error, match=match):
        as_tensors(data)


def test_samples_of_different_shapes_name_a_resize():
    class Ragged(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 4 + i, 4), 0

    with pytest.raises(ValueError, match="same shape.*Resize"):
        as_tensors(Ragged())


@pytest.mark.parametrize(
    ("loader", "d", "k", "n"), [(load_breast_cancer, 30, 2, 569), (load_wine, 13, 3, 178)]
)
def test_tables_are_standardised_with_the_training_split(loader, d, k, n):
    bundle = loader()
    x_train, _ = bundle.train.tensors
    x_test, _ = bundle.test.tensors
    assert bundle.input_shape == (d,) and bundle.kind == "tabular" and bundle.num_classes == k
    assert len(x_train) + len(x_test) == n
    np.testing.assert_allclose(x_train.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(0).numpy(), 1.0, atol=1e-5)
    assert loader().test.tensors[0].equal(x_test)  # the seeded split is reproducible


def test_tables_load_by_name():
    assert load_dataset("breast-cancer").name == "breast-cancer"
    assert load_dataset("wine").kind == "tabular"
    assert load_dataset("digits").kind == "image"

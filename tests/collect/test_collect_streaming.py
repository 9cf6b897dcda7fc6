"""Streaming: running moments against the batch computation; the netCDF round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from geomxai.collect import (
    FeatureMoments,
    collect_features,
    collect_features_to_netcdf,
    collect_moments,
)
from geomxai.models import cnn2


def reference_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight from the definition, in float64."""
    f = features.astype(np.float64)
    centred = f - f.mean(0)
    return f.mean(0), centred.T @ centred / (len(f) - 1)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return cnn2(in_channels=1, image_size=8).eval()


def test_moments_equal_the_batch_computation(model):
    torch.manual_seed(1)
    x = torch.randn(50, 1, 8, 8)
    layers = ["body.1", "body", "head"]
    # Same batching: float32 convolutions round differently for different batch sizes.
    moments = collect_moments(model, x, layers, batch_size=7)
    ds = collect_features(model, x, layers, batch_size=7)
    assert list(moments) == layers
    for name in layers:
        m = moments[name]
        mean, cov = reference_moments(ds[name].values)
        assert isinstance(m, FeatureMoments) and m.count == 50
        assert m.mean.dtype == np.float64 and m.m2.dtype == np.float64
        np.testing.assert_allclose(m.mean, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.covariance(), cov, rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(2, 40),
    batch_size=st.integers(1, 16),
    offset=st.sampled_from([0.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_moments_do_not_depend_on_batching(n, batch_size, offset, seed):
    # A large common offset is where E[xx^T] - mm^T would cancel; the Chan merge must not.
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64) + offset
    net = nn.Sequential(nn.Identity())
    m = collect_moments(net, x, "0", batch_size=batch_size)["0"]
    mean, cov = reference_moments(x.numpy())
    np.testing.assert_allclose(m.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(m.covariance(), cov, rtol=1e-9, atol=1e-9)


def test_moments_with_max_samples_and_repeated_calls():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(3, 4), relu, nn.Linear(4, 4), relu).double()
    x = torch.randn(30, 3, dtype=torch.float64)
    moments = collect_moments(net, x, "1", max_samples=20, batch_size=8)
    assert list(moments) == ["1", "1#1"]
    ds = collect_features(net, x[:20], "1")
    for key in moments:
        assert moments[key].count == 20
        np.testing.assert_allclose(moments[key].covariance(), reference_moments(ds[key].values)[1])


def test_moments_warn_on_nan():
    net = nn.Sequential(nn.Identity())
    x = torch.tensor([[1.0, 2.0], [float("nan"), 1.0], [3.0, 0.0]])
    with pytest.warns(RuntimeWarning, match="non-finite"):
        m = collect_moments(net, x, "0")["0"]
    assert np.isnan(m.mean[0])


def test_moments_empty_data_raises():
    with pytest.raises(ValueError, match="no samples"):
        collect_moments(nn.Sequential(nn.Identity()), torch.zeros(0, 2), "0")


# -- netCDF ----------------------------------------------------------------------------------------


@pytest.fixture
def needs_h5py():
    pytest.importorskip("h5py", reason="h5netcdf writes through h5py")


def test_netcdf_round_trip(model, tmp_path, needs_h5py):
    torch.manual_seed(2)
    x, y = torch.randn(23, 1, 8, 8), torch.arange(23) % 4
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    layers = ["body.1", "body", "head"]
    path = collect_features_to_netcdf(model, loader, layers, tmp_path / "features.nc")
    assert path == tmp_path / "features.nc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.nc"]
    expected = collect_features(model, loader, layers)
    with xr.open_dataset(path) as opened:
        assert opened.sizes["sample"] == 23
        xr.testing.assert_identical(opened.load(), expected)
    with xr.open_dataset(path, chunks={}) as lazy:  # dask-backed reading works too
        np.testing.assert_array_equal(lazy["body"].values, expected["body"].values)


def test_netcdf_without_labels_and_with_max_samples(model, tmp_path, needs_h5py):
    x = torch.randn(12, 1, 8, 8)
    path = collect_features_to_netcdf(
        model, x, "body", tmp_path / "f.nc", max_samples=9, batch_size=4
    )
    with xr.open_dataset(path) as opened:
        assert "label" not in opened.coords
        xr.testing.assert_identical(
            opened.load(), collect_features(model, x, "body", max_samples=9, batch_size=4)
        )


def test_netcdf_failure_leaves_no_file(tmp_path, needs_h5py):
    class FailsLater(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("third batch fails")
            return self.lin(x)

    target = tmp_path / "f.nc"
    target.write_text("an earlier file")
    with pytest.raises(RuntimeError, match="third batch"):
        collect_features_to_netcdf(FailsLater(), torch.randn(10, 2), "lin", target, batch_size=2)
    assert target.read_text() == "an earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc"]


def test_netcdf_path_must_be_in_a_directory(tmp_path):
    with pytest.raises(ValueError, match="existing directory"):
        collect_features_to_netcdf(
            nn.Sequential(nn.Identity()), torch.zeros(2, 2), "0", tmp_path / "no" / "f.nc"
        )

"""Every resize of the inputs is on record with the images' own size, and one by more than 2x
warns at the caller's line: ``image_size=`` on tensors (analyze_checkpoints, analyze_model) and
an image folder loaded at a model's size (a timm model's 160 px for 40 px PNGs)."""

from __future__ import annotations

import warnings

import pytest
import torch
from image_folders import write_image_folder
from torch import nn

from geomxai.study import PreprocessingWarning, analyze_checkpoints, analyze_model, make_probe


class ConvNet(nn.Module):
    def __init__(self, channels=1):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU())
        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.features(self.conv(x)))


@pytest.fixture(scope="module")
def digits():
    probe = make_probe("digits", 64)  # 8x8 images
    return probe.images, probe.labels


def test_image_size_on_tensors_is_recorded_and_warned_for_checkpoints(digits, tmp_path):
    torch.manual_seed(0)
    for epoch in (1, 2):
        torch.save(ConvNet().state_dict(), tmp_path / f"epoch_{epoch}.pt")
    kw = {"layers": ["features"], "probe_size": 64, "fractions": 3, "progress": False}
    with pytest.warns(PreprocessingWarning, match=r"8x8 to 32x32 .*factor of 4.0") as said:
        ds = analyze_checkpoints(ConvNet(), str(tmp_path / "*.pt"), digits, image_size=32, **kw)
    assert {r.filename for r in said if r.category is PreprocessingWarning} == {__file__}
    assert ds.attrs["input_size"] == "8x8 -> 32x32" and ds.attrs["resize_factor"] == 4.0
    assert "Resize" in ds.attrs["preprocessing"]


def test_image_size_on_tensors_is_recorded_for_analyze_model(digits):
    options = {"layers": ["features"], "probe_size": 64}
    with pytest.warns(PreprocessingWarning, match="8x8 to 32x32") as said:
        ds = analyze_model(ConvNet(), digits, image_size=32, **options)
    assert {r.filename for r in said if r.category is PreprocessingWarning} == {__file__}
    assert ds.attrs["input_size"] == "8x8 -> 32x32" and ds.attrs["resize_factor"] == 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingWarning)
        small = analyze_model(ConvNet(), digits, image_size=12, **options)
    assert small.attrs["input_size"] == "8x8 -> 12x12" and small.attrs["resize_factor"] == 1.5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 20 random 40x40 RGB PNGs each."""
    return write_image_folder(tmp_path_factory.mktemp("pngs"), "ab", 20, 40, seed=0)


def test_a_folder_loaded_at_a_timm_models_size_records_the_files_size(folder):
    pytest.importorskip("timm")
    with pytest.warns(PreprocessingWarning, match=r"40x40 to 160x160") as said:
        ds = analyze_model(
            "timm:test_vit", f"imagefolder:{folder}", labels=False, layers=["blocks.1"]
        )
    assert {r.filename for r in said if r.category is PreprocessingWarning} == {__file__}
    assert ds.attrs["input_size"] == "40x40 -> 160x160"
    assert ds.attrs["resize_factor"] == 4.0
    assert ds.attrs["preprocessing"].startswith("resized to 160x160 on loading, then ")


def test_a_folder_loaded_at_the_default_size_says_so(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingWarning)
        ds = analyze_model(
            ConvNet(channels=3),
            f"imagefolder:{folder}",
            labels=False,
            layers=["features"],
            probe_size=40,
        )
    assert ds.attrs["preprocessing"] == "resized to 64x64 on loading"
    assert ds.attrs["input_size"] == "40x40 -> 64x64" and ds.attrs["resize_factor"] == 1.6

"""Shared fixtures: seeds, tiny models with known answers, small data made on the spot."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

from geomxai import tune_cpu_allocator
from geomxai.models import cnn2

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
tune_cpu_allocator()  # as the geomxai command does: CPU training tests stop page-faulting


DEFAULT_SEED = 0
EXTENDED_SEEDS = tuple(range(10))
SEEDS_ENV = "GEOMXAI_TEST_SEEDS"


def pytest_addoption(parser):
    parser.addoption(
        "--extended",
        action="store_true",
        default=False,
        help=f"run tests that take `global_random_seed` for seeds {EXTENDED_SEEDS[0]}-"
        f"{EXTENDED_SEEDS[-1]} (marked `extended`); {SEEDS_ENV}=3, =0-19 or =1,5 picks them",
    )


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise pytest.UsageError(
                f"{SEEDS_ENV} must be seeds like 3, 0-19 or 1,5,7; got {SEEDS_ENV}={text!r}"
            )
        seeds.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return seeds


def pytest_generate_tests(metafunc):
    """``global_random_seed``: the default seed only, or a sweep with ``--extended``."""
    if "global_random_seed" not in metafunc.fixturenames:
        return
    env = os.environ.get(SEEDS_ENV, "").strip()
    if env:
        seeds = _parse_seeds(env)
    elif metafunc.config.getoption("--extended"):
        seeds = list(EXTENDED_SEEDS)
    else:
        seeds = [DEFAULT_SEED]
    params = [
        pytest.param(s, id=f"seed{s}", marks=() if s == DEFAULT_SEED else pytest.mark.extended)
        for s in seeds
    ]
    metafunc.parametrize("global_random_seed", params, indirect=True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed() -> int:
    """The default seed, 0, with torch's global generator seeded by it.

    For tests whose claim must hold whatever the seed, take ``global_random_seed`` instead.
    """
    torch.manual_seed(DEFAULT_SEED)
    return DEFAULT_SEED


@pytest.fixture
def global_random_seed(request) -> int:
    """A seed a test's claim must hold for, with torch's global generator seeded by it.

    The default seed (0) in a plain run; with ``pytest --extended`` each test that takes it runs
    for seeds 0 to 9, and ``GEOMXAI_TEST_SEEDS`` (``3``, ``0-19``, ``1,5,7``) picks the seeds.
    Every seed but the default carries the ``extended`` marker (``-m "not extended"`` leaves
    them out), the way scikit-learn's ``global_random_seed`` works.
    """
    torch.manual_seed(request.param)
    return request.param


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.WARNING)


# ---- tiny models with known answers (attribution tests)


def _hooks_left(model: nn.Module) -> int:
    """Forward and backward hooks on any submodule (read-only look at PyTorch's hook dicts)."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


@pytest.fixture
def hooks_left():
    return _hooks_left


@pytest.fixture
def tiny_cnn():
    torch.manual_seed(0)
    return cnn2(in_channels=2, image_size=8, width=4, feature_channels=2)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 2, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)


class PixelSum(nn.Module):
    """logit_0 = sum of all pixels - bias, logit_1 = 0: correct (class 0) while the sum > bias."""

    def __init__(self, bias: float):
        super().__init__()
        self.bias = bias
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1) - self.bias
        return torch.stack([s, torch.zeros_like(s)], dim=1)


@pytest.fixture
def pixel_sum():
    return PixelSum


@pytest.fixture(scope="session")
def train_tiny():
    """``train_tiny(out_dir, regime, seed=0)``: a tiny cnn2 run on digits, 2 epochs (3 checkpoints,
    epoch 0 = the initial model), 256 training and 128 test images; returns the run directory."""
    from geomxai.train import TrainConfig, train

    def run(out_dir, regime: str, *, seed: int = 0):
        config = TrainConfig(
            regime=regime,
            dataset="digits",
            model="cnn2",
            epochs=2,
            train_subset=256,
            test_subset=128,
            batch_size=64,
            device="cpu",
            seed=seed,
            out_dir=str(out_dir),
            progress=False,
        )
        return train(config)

    return run

"""Seed s means the same initialisation and the same data order in every regime (the study pairs
its cells by seed on this)."""

from __future__ import annotations

import pytest
import torch

import geomxai
from geomxai.data import load_dataset
from geomxai.train import REGIMES, TrainConfig, Trainer, train


def _config(tmp_path, regime, seed=3):
    return TrainConfig(
        regime=regime,
        dataset="digits",
        seed=seed,
        epochs=1,
        train_subset=256,
        test_subset=32,
        group_size=8,
        out_dir=str(tmp_path / f"{regime}-{seed}"),
        progress=False,
    )


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_every_regime_starts_from_the_same_weights(tmp_path, digits):
    initial = {}
    for regime in REGIMES:
        run = train(_config(tmp_path, regime), dataset=digits)
        model, _ = geomxai.load_checkpoint(run / "checkpoints" / "epoch_0000.pt")
        # The whitening layer has buffers only (no random init); the rest must be identical.
        initial[regime] = {
            k: v for k, v in model.state_dict().items() if not k.startswith("whiten")
        }
    reference = initial["regular"]
    for regime, state in initial.items():
        assert state.keys() == reference.keys(), regime
        for key, value in state.items():
            assert torch.equal(value, reference[key]), (regime, key)
    other = train(_config(tmp_path, "regular", seed=4), dataset=digits)
    model, _ = geomxai.load_checkpoint(other / "checkpoints" / "epoch_0000.pt")
    assert not torch.equal(model.state_dict()["head.weight"], reference["head.weight"])


def test_every_regime_sees_the_batches_in_the_same_order(tmp_path, digits):
    orders = {}
    for regime in REGIMES:
        trainer = Trainer(_config(tmp_path, regime), dataset=digits)
        trainer.fit()
        orders[regime] = [b.tolist() for b in trainer._epoch_index_batches(1)]
    assert all(order == orders["regular"] for order in orders.values())

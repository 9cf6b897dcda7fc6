"""Crash-safe resumable runs: a trainer killed with SIGKILL at any moment (a checkpoint write
included) leaves a run that resumes to the same weights, bit for bit, as a run never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from reliability_helpers import toml_config

from geomxai.rundir import LOCK_FILE, list_checkpoints, read_metrics
from geomxai.train import read_checkpoint

pytestmark = pytest.mark.timeout(600)

EPOCHS = 5
TIMING_KEYS = {"seconds", "images_per_s"}
# One thread everywhere: the straight run and the resumed one must add floats in one order.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(config, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "geomxai.cli", "train", "--config", str(config), *extra],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    config = toml_config(folder / "c.toml", folder / "run", epochs=EPOCHS, train_subset=1024)
    child = _train(config)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    return folder / "run"


def _seen(folder, when):
    try:
        names = [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return False
    if when == "epoch-1-written":
        return "epoch_0001.pt" in names
    if when == "checkpoint-being-written":  # a temporary checkpoint file of epoch 2 or later
        return any(
            n.startswith(".epoch_") and n.endswith(".tmp") and "0001" not in n and "0000" not in n
            for n in names
        )
    return "epoch_0002.pt" in names


@pytest.mark.parametrize("when", ["epoch-1-written", "checkpoint-being-written", "epoch-2-written"])
def test_a_sigkilled_run_resumes_bit_for_bit(tmp_path, straight, when):
    out = tmp_path / "run"
    config = toml_config(tmp_path / "c.toml", out, epochs=EPOCHS, train_subset=1024)
    child = _train(config)
    end = time.time() + 240
    while not _seen(out / "checkpoints", when) and child.poll() is None and time.time() < end:
        pass  # a tight loop: a checkpoint write takes milliseconds
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL  # killed mid-run, not finished first
    assert max(list_checkpoints(out)) < EPOCHS and (out / LOCK_FILE).exists()
    resumed = _train(config, "--set", "resume=true")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert sorted(list_checkpoints(out)) == list(range(EPOCHS + 1))
    assert not (out / LOCK_FILE).exists()
    assert not [p for p in out.rglob("*.tmp")]
    for epoch in range(1, EPOCHS + 1):
        got = read_checkpoint(out / "checkpoints" / f"epoch_{epoch:04d}.pt")["model"]
        want = read_checkpoint(straight / "checkpoints" / f"epoch_{epoch:04d}.pt")["model"]
        assert all(torch.equal(got[k], want[k]) for k in want), f"epoch {epoch} differs"

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]

    assert strip(read_metrics(out)) == strip(read_metrics(straight))

"""Sub-epoch checkpoints: where they are written, how they are listed, and a mid-epoch resume
that continues bit for bit like a straight run (the epoch resume tests' standard)."""

from __future__ import annotations

import pytest
import torch
from _internals import train_loop as loop_module
from tiny_runs import tiny_config

import geomxai
from geomxai.data import load_dataset
from geomxai.rundir import list_step_checkpoints, read_run, training_checkpoints
from geomxai.train import (
    CheckpointError,
    ConfigError,
    list_checkpoints,
    read_checkpoint,
    read_metrics,
    train,
)

# The tiny run has 4 steps per epoch (128 images, batch 32): with a checkpoint every 3 steps
# over 2 epochs, steps 3 and 6 get one (step 4 and 8 end an epoch: their epoch checkpoint is it).
EVERY = 3


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(tmp_path, name, **changes):
    values = {"epochs": 2, "regime": "saliencydecor", "augment": True, **changes}
    return tiny_config(tmp_path / name, **values)


def _same_weights(a, b):
    a, b = read_checkpoint(a), read_checkpoint(b)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"] == b["scheduler"]
    for (ka, va), (kb, vb) in zip(
        sorted(a["optimizer"]["state"].items()),
        sorted(b["optimizer"]["state"].items()),
        strict=True,
    ):
        assert ka == kb and torch.equal(va["momentum_buffer"], vb["momentum_buffer"])


def test_sub_epoch_checkpoints_are_written_named_and_listed_in_training_order(tmp_path, digits):
    run = train(_config(tmp_path, "run", checkpoint_every_steps=EVERY), dataset=digits)
    assert sorted(list_step_checkpoints(run)) == [3, 6]
    assert (run / "checkpoints" / "step_00000003.pt").is_file()
    assert sorted(list_checkpoints(run)) == [0, 1, 2]  # the epoch contract is unchanged
    timeline = training_checkpoints(run)
    assert [c.step for c in timeline] == [0, 3, 4, 6, 8]
    assert [c.epoch for c in timeline] == [0.0, 0.75, 1.0, 1.5, 2.0]
    assert [c.sub_epoch for c in timeline] == [False, True, False, True, False]
    assert read_run(run).timeline == tuple(timeline)
    payload = read_checkpoint(run / "checkpoints" / "step_00000006.pt")
    assert payload["epoch"] == 1 and payload["step"] == 6 and payload["steps_per_epoch"] == 4
    assert payload["partial_epoch"]["steps_done"] == 2 and "metrics" not in payload
    # Any reader of checkpoints loads one as it loads an epoch checkpoint.
    model, config = geomxai.load_checkpoint(run / "checkpoints" / "step_00000006.pt")
    assert config.checkpoint_every_steps == EVERY
    # Only the first epoch's, when asked.
    first = train(
        _config(tmp_path, "first", checkpoint_every_steps=1, checkpoint_steps_epochs=1),
        dataset=digits,
    )
    assert sorted(list_step_checkpoints(first)) == [1, 2, 3]


def test_sub_epoch_checkpoints_do_not_change_the_run(tmp_path, digits):
    plain = train(_config(tmp_path, "plain"), dataset=digits)
    with_steps = train(_config(tmp_path, "steps", checkpoint_every_steps=1), dataset=digits)
    assert list_step_checkpoints(plain) == {}
    assert sorted(list_step_checkpoints(with_steps)) == [1, 2, 3, 5, 6, 7]
    for epoch in (1, 2):
        name = f"checkpoints/epoch_{epoch:04d}.pt"
        _same_weights(plain / name, with_steps / name)
    keys = ("loss_total", "train_acc", "test_acc")
    assert [{k: r[k] for k in keys} for r in read_metrics(plain)] == [
        {k: r[k] for k in keys} for r in read_metrics(with_steps)
    ]


@pytest.mark.parametrize("crash_at", [5, 8])
def test_resume_from_a_sub_epoch_checkpoint_equals_a_straight_run(
    tmp_path, digits, monkeypatch, crash_at
):
    """Killed at step ``crash_at`` (5: in epoch 2 before its sub-epoch checkpoint, so the resume
    starts from epoch 1's; 8: after step 6's, so it starts mid-epoch from step 6)."""
    straight = train(_config(tmp_path, "straight", checkpoint_every_steps=EVERY), dataset=digits)

    calls = {"n": 0}
    real_step = loop_module.train_step

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", dying_step)
    config = _config(tmp_path, "resumed", checkpoint_every_steps=EVERY)
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset=digits)
    monkeypatch.setattr(loop_module, "train_step", real_step)
    resumed = tmp_path / "resumed"
    assert sorted(list_checkpoints(resumed)) == [0, 1]
    assert sorted(list_step_checkpoints(resumed)) == ([3] if crash_at == 5 else [3, 6])

    train(config.replace(resume=True), dataset=digits)
    for name in ("epoch_0001", "epoch_0002", "step_00000003", "step_00000006"):
        _same_weights(straight / f"checkpoints/{name}.pt", resumed / f"checkpoints/{name}.pt")
    rows, expected = read_metrics(resumed), read_metrics(straight)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss_total", "loss_ce", "loss_kl", "loss_decor", "train_acc", "test_acc"):
        assert [r[key] for r in rows] == [r[key] for r in expected], key


def test_a_damaged_sub_epoch_checkpoint_is_refused_before_the_resume_writes(tmp_path, digits):
    config = _config(tmp_path, "run", epochs=1, checkpoint_every_steps=EVERY)
    run = train(config, dataset=digits)
    # Make the step-3 checkpoint the newest point (as if epoch 1 never finished) and damage it.
    (run / "checkpoints" / "epoch_0001.pt").unlink()
    path = run / "checkpoints" / "step_00000003.pt"
    payload = read_checkpoint(path)
    payload["partial_epoch"]["sums"] = torch.zeros(2)
    torch.save(payload, path)
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="step_00000003.pt' is not a sub-epoch checkpoint"):
        train(config.replace(resume=True), dataset=digits)
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"checkpoint_every_steps": 0}, "checkpoint_every_steps must be None or at least 1"),
        ({"checkpoint_steps_epochs": 1}, "checkpoint_every_steps is None"),
        (
            {"checkpoint_every_steps": 5, "checkpoint_steps_epochs": 0},
            "checkpoint_steps_epochs must be None",
        ),
        ({"checkpoint_every_steps": 2.5}, "checkpoint_every_steps must be an integer or None"),
    ],
)
def test_invalid_sub_epoch_settings_are_refused(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **changes)


def test_sub_epoch_settings_may_change_on_resume(tmp_path, digits):
    config = _config(tmp_path, "run", epochs=1)
    run = train(config, dataset=digits)
    train(config.replace(resume=True, epochs=2, checkpoint_every_steps=EVERY), dataset=digits)
    assert sorted(list_step_checkpoints(run)) == [6]

"""Sub-epoch checkpoints in the run-directory reader: names, training order, global steps."""

from __future__ import annotations

import json
import math

import torch

from geomxai.rundir import (
    checkpoint_path,
    list_checkpoints,
    list_step_checkpoints,
    read_run,
    step_checkpoint_path,
    steps_per_epoch,
    training_checkpoints,
)


def _run(tmp_path, *, epochs=(0, 1, 2), steps=(3, 6), rows=None):
    run = tmp_path / "run"
    for path in [checkpoint_path(run, e) for e in epochs] + [
        step_checkpoint_path(run, s) for s in steps
    ]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read by the reader")
    (run / "config.json").write_text(json.dumps({"dataset": "digits", "regime": "sgt", "seed": 0}))
    rows = [{"epoch": 1, "steps": 4}, {"epoch": 2, "steps": 8}] if rows is None else rows
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_step_checkpoints_are_listed_in_training_order_with_their_steps(tmp_path):
    run = _run(tmp_path)
    folder = run / "checkpoints"
    # An interrupted write, a short name and a folder of a checkpoint's name: all ignored.
    (folder / ".step_00000009.pt.k2j4.tmp").write_bytes(b"")
    (folder / "step_9.pt").write_bytes(b"")
    (folder / "step_00000010.pt").mkdir()
    assert list(list_step_checkpoints(run)) == [3, 6]
    assert list(list_checkpoints(run)) == [0, 1, 2]  # epoch checkpoints only, as before
    timeline = training_checkpoints(run)
    assert [(c.step, c.epoch, c.sub_epoch) for c in timeline] == [
        (0, 0.0, False),
        (3, 0.75, True),
        (4, 1.0, False),
        (6, 1.5, True),
        (8, 2.0, False),
    ]
    assert timeline[1].path == folder / "step_00000003.pt"
    assert read_run(run).timeline == tuple(timeline)


def test_steps_per_epoch_from_metrics_else_from_a_checkpoint(tmp_path):
    run = _run(tmp_path, epochs=(0,), steps=(2,), rows=[])
    # No metrics line yet (stopped in epoch 1): the newest checkpoint says, read weights-only.
    torch.save({"steps_per_epoch": 5, "model": {}}, step_checkpoint_path(run, 2))
    assert steps_per_epoch(run) == 5
    assert [(c.step, c.epoch) for c in training_checkpoints(run)] == [(0, 0.0), (2, 0.4)]


def test_unknown_steps_per_epoch_leave_steps_unknown_and_epoch_order(tmp_path):
    run = _run(tmp_path, steps=(), rows=[{"epoch": 1}, {"epoch": 2}])
    timeline = training_checkpoints(run)
    assert [c.epoch for c in timeline] == [0.0, 1.0, 2.0]
    assert [c.step for c in timeline] == [0, None, None]
    run = _run(tmp_path / "other", epochs=(0,), steps=(2,), rows=[])
    (sub,) = [c for c in training_checkpoints(run) if c.sub_epoch]
    assert sub.step == 2 and math.isnan(sub.epoch)

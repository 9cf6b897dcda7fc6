"""The one run-directory reader: checkpoints, config, metrics, and the same tolerance everywhere."""

from __future__ import annotations

import json

import pytest

import geomxai.train
from geomxai import rundir
from geomxai.rundir import (
    checkpoint_path,
    list_checkpoints,
    read_config,
    read_metrics,
    read_run,
)
from geomxai.study import analyze_run, checkpoints_of

ROWS = [{"epoch": 1, "loss_total": 0.5}, {"epoch": 2, "loss_total": 0.25}]


def _run_dir(tmp_path, *, epochs=(0, 1, 2), metrics_text=None):
    run = tmp_path / "run"
    for epoch in epochs:
        path = checkpoint_path(run, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read by the reader")
    (run / "config.json").write_text(json.dumps({"dataset": "digits", "seed": 3}))
    if metrics_text is None:
        metrics_text = "".join(json.dumps(r) + "\n" for r in ROWS)
    (run / "metrics.jsonl").write_text(metrics_text)
    return run


def test_checkpoint_names_and_listing_in_epoch_order(tmp_path):
    run = _run_dir(tmp_path, epochs=(10, 0, 2))
    folder = run / "checkpoints"
    # What an interrupted atomic write leaves behind, and names that are not checkpoints.
    (folder / ".epoch_0003.pt.k2j4.tmp").write_bytes(b"")
    (folder / "epoch_3.pt").write_bytes(b"")
    (folder / "epoch_0004.pt").mkdir()
    found = list_checkpoints(run)
    assert list(found) == [0, 2, 10]
    assert found[10] == folder / "epoch_0010.pt" == checkpoint_path(run, 10)
    assert checkpoints_of(run) == list(found.values())


def test_a_directory_without_checkpoints_is_not_a_run(tmp_path):
    assert list_checkpoints(tmp_path) == {}
    for read in (read_run, checkpoints_of, lambda d: list_checkpoints(d, missing_ok=False)):
        with pytest.raises(FileNotFoundError, match="no checkpoints under .*written by `geomxai"):
            read(tmp_path)


def test_a_directory_without_config_is_not_a_run(tmp_path):
    run = _run_dir(tmp_path)
    (run / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"no config.json in '{run}'"):
        read_run(run)


def test_read_run(tmp_path):
    run = read_run(_run_dir(tmp_path))
    assert run.epochs == [0, 1, 2]
    assert run.config == {"dataset": "digits", "seed": 3}
    assert run.metrics == {1: ROWS[0], 2: ROWS[1]}  # epoch 0, the initial model, has no row
    assert read_config(run.path) == run.config


def test_a_last_line_cut_short_is_skipped_by_every_reader(tmp_path):
    """A killed run leaves half a line; the trainer's and the analysis's readers agree on it."""
    text = json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1])[:9]
    run = _run_dir(tmp_path, metrics_text=text)
    assert read_metrics(run) == [ROWS[0]]
    assert geomxai.train.read_metrics(run) == [ROWS[0]]
    assert read_run(run).metrics == {1: ROWS[0]}


def test_damage_before_the_last_line_raises_with_file_and_line(tmp_path):
    text = json.dumps(ROWS[0]) + "\n\n{oops\n" + json.dumps(ROWS[1]) + "\n"
    run = _run_dir(tmp_path, metrics_text=text)
    with pytest.raises(ValueError, match=r"metrics.jsonl' line 3 is not valid JSON"):
        read_metrics(run)
    with pytest.raises(ValueError, match="line 3"):
        read_run(run)


def test_rows_must_be_objects_with_an_epoch(tmp_path):
    run = _run_dir(tmp_path, metrics_text="[1, 2]\n")
    with pytest.raises(ValueError, match="line 1 must be a JSON object; got list"):
        read_metrics(run)
    run = _run_dir(tmp_path, metrics_text='{"loss": 1}\n')
    assert read_metrics(run) == [{"loss": 1}]
    with pytest.raises(ValueError, match="without an 'epoch' key"):
        read_run(run)


def test_the_last_row_of_an_epoch_wins(tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in [ROWS[0], {"epoch": 1, "loss_total": 9.0}])
    assert read_run(_run_dir(tmp_path, metrics_text=text)).metrics[1]["loss_total"] == 9.0


def test_no_metrics_file(tmp_path):
    run = _run_dir(tmp_path)
    (run / "metrics.jsonl").unlink()
    assert read_metrics(run) == []
    assert read_run(run).metrics == {}


def test_the_analysis_refuses_what_is_not_a_run_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="is .* a run directory"):
        analyze_run(tmp_path, progress=False)


def test_train_re_exports_the_reader():
    for name in ("checkpoint_path", "list_checkpoints", "read_config", "read_metrics", "read_run"):
        assert getattr(geomxai.train, name) is getattr(rundir, name)

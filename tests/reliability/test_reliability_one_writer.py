"""One writer per run: an OS lock per run directory (and per study), refused second writers,
locks of killed processes taken over, and concurrent analyses sharing one cache safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from reliability_helpers import TRAIN_FIELDS, one_error_line, toml_config

from geomxai.pipeline import run_study
from geomxai.rundir import (
    LOCK_FILE,
    DirectoryLock,
    DirectoryLockedError,
    list_checkpoints,
    read_metrics,
)
from geomxai.train import TrainConfig, train

pytestmark = pytest.mark.timeout(300)


class TestDirectoryLock:
    def test_a_second_holder_is_refused_with_the_holder_named(self, tmp_path, hold_lock):
        child = hold_lock(tmp_path / "run")
        with pytest.raises(DirectoryLockedError, match=rf"pid {child.pid} on "):
            DirectoryLock(tmp_path / "run").acquire()

    def test_within_one_process_a_second_lock_object_is_refused(self, tmp_path):
        with DirectoryLock(tmp_path / "run"):
            with pytest.raises(DirectoryLockedError, match=f"pid {os.getpid()}"):
                DirectoryLock(tmp_path / "run").acquire()
        DirectoryLock(tmp_path / "run").acquire().release()

    def test_the_lock_of_a_killed_process_is_taken_over(self, tmp_path, hold_lock, caplog):
        folder = tmp_path / "run"
        folder.mkdir()
        (folder / "keep.txt").write_text("x")
        child = hold_lock(folder)
        lock_file = folder / LOCK_FILE
        assert json.loads(lock_file.read_text())["pid"] == child.pid
        child.send_signal(signal.SIGKILL)
        child.wait()
        # SIGKILL runs no cleanup: the lock file stays, naming a process that is gone.
        assert json.loads(lock_file.read_text())["pid"] == child.pid
        with caplog.at_level("INFO"), DirectoryLock(folder) as lock:
            assert lock.held
            assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        assert f'"pid": {child.pid}' in caplog.text  # the takeover is logged
        assert not lock_file.exists() and (folder / "keep.txt").exists()

    def test_release_removes_only_the_folders_it_created_and_left_empty(self, tmp_path):
        with DirectoryLock(tmp_path / "a" / "b" / "run"):
            assert (tmp_path / "a" / "b" / "run" / LOCK_FILE).is_file()
        assert sorted(tmp_path.iterdir()) == []
        (tmp_path / "a").mkdir()
        with DirectoryLock(tmp_path / "a" / "run") as lock:
            (lock.folder / "config.json").write_text("{}")
        assert sorted(p.name for p in (tmp_path / "a" / "run").iterdir()) == ["config.json"]

    def test_many_processes_racing_for_one_lock_get_exactly_one_holder(self, tmp_path):
        script = textwrap.dedent(
            """
            import sys, time
            from geomxai.rundir import DirectoryLock, DirectoryLockedError
            while time.time() < float(sys.argv[2]):
                time.sleep(0.001)
            try:
                lock = DirectoryLock(sys.argv[1]).acquire()
            except DirectoryLockedError:
                print("refused", flush=True)
            else:
                print("held", flush=True)
                time.sleep(2)
                lock.release()
            """
        )
        start = time.time() + 3
        children = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(tmp_path / "run"), str(start)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        outcomes = sorted(c.communicate(timeout=60)[0].strip() for c in children)
        assert outcomes.count("held") == 1 and outcomes.count("refused") == 5


def _wait_for(path: Path, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        if time.time() > end:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


# A trainer whose training data waits for a file before it serves an item: it holds its run's
# lock (taken before checkpoint 0 is written) as long as the test needs, so the second writer
# meets it for certain, not by timing luck. The data is the caller's, as train(dataset=) takes it.
PAUSED_TRAINER = textwrap.dedent(
    """
    import dataclasses, sys, time
    from pathlib import Path
    from torch.utils.data import Dataset
    from geomxai.data import load_dataset
    from geomxai.train import TrainConfig, train
    go = Path(sys.argv[1])
    class Gated(Dataset):
        def __init__(self, data):
            self.data = data
        def __len__(self):
            return len(self.data)
        def __getitem__(self, i):
            while not go.exists():
                time.sleep(0.05)
            return self.data[i]
    config = TrainConfig.from_toml(sys.argv[2], {"resume": True})
    bundle = load_dataset(config.dataset)
    train(config, dataset=dataclasses.replace(bundle, train=Gated(bundle.train)))
    """
)


class TestOneTrainerPerRun:
    def test_a_second_train_resume_is_refused_while_the_first_runs(self, tmp_path, cli):
        out = tmp_path / "run"
        # Items are read during the epochs (not all into memory first), so the gate holds there.
        config = toml_config(tmp_path / "c.toml", out, epochs=3, data_on_device=False)
        go = tmp_path / "go"
        first = subprocess.Popen(
            [sys.executable, "-c", PAUSED_TRAINER, str(go), str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for(out / "checkpoints" / "epoch_0000.pt")
            status, text = cli("train", "--config", config, "--set", "resume=true")
            assert status == 2
            line = one_error_line(text)
            assert "in use by another geomxai process" in line and f"pid {first.pid}" in line
            assert "choose another out_dir" in line
        finally:
            go.touch()
            _, err = first.communicate(timeout=240)
        assert first.returncode == 0, err
        rows = read_metrics(out)
        assert [r["epoch"] for r in rows] == [1, 2, 3]  # not interleaved: one writer only
        assert sorted(list_checkpoints(out)) == [0, 1, 2, 3]
        assert not (out / LOCK_FILE).exists()

    def test_a_run_whose_trainer_was_killed_resumes(self, tmp_path, hold_lock):
        config = TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(tmp_path / "run")})
        train(config)
        child = hold_lock(tmp_path / "run")
        with pytest.raises(DirectoryLockedError, match=f"pid {child.pid}"):
            train(config.replace(resume=True, epochs=2))
        child.kill()
        child.wait()
        train(config.replace(resume=True, epochs=2))
        assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]

    def test_geomxai_study_is_refused_at_a_run_another_process_trains(self, tmp_path, hold_lock):
        profile = tmp_path / "p.toml"
        fields = {**TRAIN_FIELDS, "out_dir": "unused"}
        profile.write_text(
            "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
            + '[study]\nname = "s"\nregimes = ["regular"]\nseeds = [0]\n'
        )
        child = hold_lock(tmp_path / "runs" / "s" / "regular-s0")
        with pytest.raises(DirectoryLockedError, match=rf"run directory .*\(pid {child.pid} on "):
            run_study(str(profile), runs_root=tmp_path / "runs", reports_root=tmp_path / "rep")
        assert not (tmp_path / "rep").exists()


# Two processes that cache the same checkpoint's result at the same moment, many times over,
# reading the entry back between writes; `measure` is replaced by a fixed Dataset so the test
# exercises the cache, not the metrics.
CACHE_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np, xarray as xr
    sys.path.insert(0, sys.argv[4])  # tests/, for the one module that reaches inside geomxai
    from _internals import study_cache as A
    from geomxai.study import AnalysisOptions, make_probe
    ckpt, cache, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    expected = xr.Dataset({"a": ("x", np.arange(200_000.0))})
    A.measure = lambda model, probe, options: expected
    probe = make_probe("digits", 4)
    options = AnalysisOptions(probe_size=4)
    while time.time() < start:
        time.sleep(0.001)
    for _ in range(15):
        out = A.analyze_checkpoint(ckpt, probe, options, cache_dir=cache)
        assert out.identical(expected), out
        for entry in list(__import__("pathlib").Path(cache).glob("*.nc")):
            entry.unlink(missing_ok=True)  # so the next call writes again, racing the other
    out = A.analyze_checkpoint(ckpt, probe, options, cache_dir=cache)
    assert out.identical(expected)
    print("ok", flush=True)
    """
)


TESTS = str(Path(__file__).resolve().parents[1])


class TestConcurrentAnalyses:
    def test_two_processes_caching_one_checkpoint_never_collide(self, tmp_path, run):
        cache = tmp_path / "cache"
        start = time.time() + 4
        ckpt = run / "checkpoints" / "epoch_0001.pt"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CACHE_WRITER, str(ckpt), str(cache), str(start), TESTS],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for child in children:
            out, err = child.communicate(timeout=240)
            assert child.returncode == 0 and out.strip() == "ok", err
        entries = sorted(p.name for p in cache.iterdir())
        assert len(entries) <= 1 and all(e.endswith(".nc") for e in entries), entries
        for entry in cache.glob("*.nc"):
            with xr.open_dataset(entry, engine="h5netcdf") as ds:
                np.testing.assert_array_equal(ds["a"].values, np.arange(200_000.0))

    def test_two_threads_writing_one_entry_leave_one_whole_entry(self, tmp_path):
        from concurrent.futures import ThreadPoolExecutor

        from _internals import read_cache as _read_cache
        from _internals import write_cache as _write_cache

        entry = tmp_path / "epoch_0001-abc.nc"
        datasets = [xr.Dataset({"a": ("x", np.full(50_000, float(i)))}) for i in range(8)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda ds: _write_cache(entry, ds), datasets))
        assert [p.name for p in tmp_path.iterdir()] == [entry.name]
        got = _read_cache(entry)
        assert any(got.identical(ds) for ds in datasets)

"""Atomic outputs: every file is written whole or not at all (a full disk included), with the
usual file mode, and what a killed writer left behind is cleaned by the next run — only files
of geomxai's own temporary pattern, never a user's."""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest
import torch
import xarray as xr
from _internals import (
    STALE_AFTER_S,
    append_metrics,
    atomic_path,
    fs,
    remove_stale_temps,
    write_atomic,
    write_text_atomic,
)
from _internals import train_rundir as rundir_module
from reliability_helpers import TRAIN_FIELDS, one_error_line, toml_config

from geomxai.rundir import list_checkpoints, read_metrics
from geomxai.study import analyze_run, save_results
from geomxai.train import ConfigError, TrainConfig, train

pytestmark = pytest.mark.timeout(300)

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _tagged(target: str, pid: int) -> str:
    return f".{target}.{fs._host_tag()}-{pid}-k2j4x9q_.tmp"


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def umask():
    before = os.umask(0o022)
    os.umask(before)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(before)


class TestFileMode:
    @pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
    def test_atomic_writes_get_the_mode_open_would_give(self, tmp_path, umask, mask):
        umask(mask)
        expected = 0o666 & ~mask
        plain = tmp_path / "plain"
        plain.write_text("x")
        assert plain.stat().st_mode & 0o777 == expected  # the reference: plain open()
        a = write_text_atomic(tmp_path / "a.txt", "x")
        b = write_atomic(tmp_path / "b.bin", lambda fh: fh.write(b"x"), binary=True)
        c = atomic_path(tmp_path / "c.nc", lambda tmp: tmp.write_bytes(b"x"))
        d = save_results(xr.Dataset({"v": ("x", np.arange(3.0))}), tmp_path / "d.nc")
        for path in (a, b, c, d):
            assert path.stat().st_mode & 0o777 == expected, path

    def test_a_trained_run_has_ordinary_modes(self, tmp_path, umask):
        umask(0o022)
        run_dir = train(TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(tmp_path / "run")}))
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert files and all(p.stat().st_mode & 0o777 == 0o644 for p in files)


class TestFullDisk:
    def test_write_atomic_keeps_the_old_file_and_names_the_destination(self, tmp_path):
        path = write_text_atomic(tmp_path / "config.json", "old")

        def fill(fh):
            fh.write("new, half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with pytest.raises(OSError) as info:
            write_atomic(path, fill)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
        assert path.read_text() == "old" and _names(tmp_path) == ["config.json"]

    def test_atomic_path_keeps_the_old_file(self, tmp_path):
        path = save_results(xr.Dataset({"v": ("x", np.arange(3.0))}), tmp_path / "r.nc")
        before = path.read_bytes()

        def fill(tmp):
            tmp.write_bytes(b"\x89HDF half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with pytest.raises(OSError, match="No space left") as info:
            atomic_path(path, fill)
        assert info.value.filename == str(path)
        assert path.read_bytes() == before and _names(tmp_path) == ["r.nc"]

    def test_train_on_a_full_disk_prints_one_line_and_resumes(self, tmp_path, cli, monkeypatch):
        out = tmp_path / "run"
        config = toml_config(tmp_path / "c.toml", out, epochs=2)
        assert cli("train", "--config", config, "--set", "epochs=1")[0] == 0
        before = (out / "checkpoints" / "epoch_0001.pt").read_bytes()
        real_save = torch.save

        def full(obj, fh, *args, **kwargs):
            fh.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(torch, "save", full)
        status, text = cli("train", "--config", config, "--set", "resume=true")
        assert status == 2
        line = one_error_line(text)
        assert str(out / "checkpoints" / "epoch_0002.pt") in line
        assert "no space left on device" in line and "free space" in line
        assert _names(out / "checkpoints") == ["epoch_0000.pt", "epoch_0001.pt"]
        assert (out / "checkpoints" / "epoch_0001.pt").read_bytes() == before
        monkeypatch.setattr(torch, "save", real_save)
        assert cli("train", "--config", config, "--set", "resume=true")[0] == 0
        assert [r["epoch"] for r in read_metrics(out)] == [1, 2]

    # geomxai analyze on a full disk (results and cache) is shown with a real tmpfs, in a child
    # process, in test_reliability_full_disk.py: results are serialised in memory now, so a
    # to_netcdf that writes a file is no longer the path a full disk meets.

    def test_a_metrics_append_on_a_full_disk_names_the_file(self, tmp_path, run, monkeypatch):

        real_open = open

        class Full:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, text):
                self.fh.write(text[:5])
                self.fh.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr("builtins.open", lambda *a, **k: Full(real_open(*a, **k)))
        with pytest.raises(OSError) as info:
            append_metrics(run, {"epoch": 2, "loss_total": 0.1})
        monkeypatch.undo()
        assert info.value.filename == str(run / "metrics.jsonl")
        # The line cut short is what every reader skips, and a resume rewrites the file.
        assert [r["epoch"] for r in read_metrics(run)] == [1]
        config = TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(run), "resume": True, "epochs": 2})
        train(config)
        assert [r["epoch"] for r in read_metrics(run)] == [1, 2]

    def test_a_failure_after_the_lock_leaves_no_run_directory(self, tmp_path, monkeypatch):
        # The lock creates the run directory; a run refused or failing before it wrote
        # anything must not leave it (nor the parents it created) behind.
        def full(path, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(rundir_module, "write_text_atomic", full)
        config = TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(tmp_path / "a" / "b" / "run")})
        with pytest.raises(OSError, match="No space left"):
            train(config)
        assert _names(tmp_path) == []

    @pytest.mark.parametrize(
        ("changes", "match"),
        [({"batch_size": 4096}, "batch_size must not exceed"), ({"group_size": 64}, "group_size")],
    )
    def test_late_refusals_in_the_trainer_leave_no_run_directory(self, tmp_path, changes, match):
        fields = {**TRAIN_FIELDS, "regime": "dbn", "out_dir": str(tmp_path / "x" / "run")}
        with pytest.raises(ConfigError, match=match):
            train(TrainConfig(**{**fields, **changes}))
        assert _names(tmp_path) == []


class TestLeftoversOfKilledWriters:
    def test_the_trainer_cleans_its_run_directory_on_resume(self, tmp_path, run, dead_pid):
        ckpts = run / "checkpoints"
        leftovers = [
            ckpts / _tagged("epoch_0002.pt", dead_pid),
            ckpts / _tagged("epoch_0001.pt", os.getppid()),  # live pid: under the lock, still ours
            ckpts / ".epoch_0002.pt.a1b2c3d4.tmp",  # the untagged names of earlier versions
            ckpts / ".epoch_0002.pt.tmp",
            run / _tagged("metrics.jsonl", dead_pid),
            run / _tagged("config.json", dead_pid),
        ]
        user_files = [
            ckpts / ".epoch_0002.pt.bak",
            ckpts / "notes.tmp",
            ckpts / ".notes.txt.a1b2c3d4.tmp",  # our pattern, but not a name we write
            run / ".results.nc.a1b2c3d4.tmp",
            run / "analysis" / _tagged("epoch_0001-0123.nc", dead_pid),  # analyze's, not ours
            run / "README.md",
        ]
        for path in leftovers + user_files:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"half")
        config = TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(run), "resume": True, "epochs": 2})
        train(config)
        assert not any(p.exists() for p in leftovers)
        assert all(p.exists() for p in user_files)
        assert sorted(list_checkpoints(run)) == [0, 1, 2]

    def test_the_analysis_cleans_its_cache_folder(self, tmp_path, run, dead_pid, hold_lock):
        cache = run / "analysis"
        cache.mkdir()
        live = hold_lock(tmp_path / "elsewhere").pid  # some live process of this host
        stale = [
            cache / _tagged("epoch_0001-0123456789abcdef01234567.nc", dead_pid),
            cache / ".res.nc.tmp",
            cache / ".epoch_0000-0123.nc.a1b2c3d4.tmp",  # untagged, untouched for long
        ]
        kept = [
            cache / _tagged("epoch_0001-0123456789abcdef01234567.nc", live),  # being written
            cache / ".epoch_0000-4567.nc.e5f6g7h8.tmp",  # untagged, just written
            cache / ".notes.txt.a1b2c3d4.tmp",
            cache / "mine.nc",
        ]
        for path in stale + kept:
            path.write_bytes(b"half")
        old = time.time() - STALE_AFTER_S - 60
        os.utime(stale[2], (old, old))
        analyze_run(run, probe_size=8, progress=False)
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept)

    def test_the_results_writer_cleans_beside_its_file(self, tmp_path, dead_pid):
        stale = [tmp_path / ".res.nc.tmp", tmp_path / _tagged("res.nc", dead_pid)]
        kept = [
            tmp_path / ".other.nc.tmp",
            tmp_path / _tagged("other.nc", dead_pid),
            tmp_path / _tagged("res.nc", os.getpid()),  # this process's own, maybe in use
            tmp_path / "res.nc.tmp",
        ]
        for path in stale + kept:
            path.write_bytes(b"half")
        save_results(xr.Dataset({"v": ("x", np.arange(3.0))}), tmp_path / "res.nc")
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept)

    def test_a_temp_of_another_host_goes_only_once_it_is_old(self, tmp_path):
        fresh = tmp_path / ".res.nc.otherhost-12-a1b2c3d4.tmp"
        old = tmp_path / ".res.nc.otherhost-13-a1b2c3d4.tmp"
        for path in (fresh, old):
            path.write_bytes(b"")
        t = time.time() - STALE_AFTER_S - 60
        os.utime(old, (t, t))
        assert remove_stale_temps(tmp_path, ["res.nc"]) == [old]
        assert remove_stale_temps(tmp_path, ["res.nc"], owned=True) == [fresh]

    def test_folders_and_links_are_never_removed(self, tmp_path, dead_pid):
        (tmp_path / _tagged("res.nc", dead_pid)).mkdir()
        (tmp_path / "target").write_text("user data")
        (tmp_path / ".res.nc.tmp").symlink_to(tmp_path / "target")
        assert remove_stale_temps(tmp_path, ["res.nc"], owned=True) == []
        assert (tmp_path / "target").read_text() == "user data"

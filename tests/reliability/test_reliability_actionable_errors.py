"""Errors a person can act on: one line naming the problem and the fix, never a traceback
(``-v`` keeps the traceback), for unwritable places, full disks, bad results files and bad
checkpoints."""

from __future__ import annotations

import errno
import logging
import os

import numpy as np
import pytest
import torch
import xarray as xr
from reliability_helpers import one_error_line, toml_config

from geomxai import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from geomxai.cli import main, os_error_message
from geomxai.rundir import list_checkpoints
from geomxai.study import analyze_run, open_results, save_results
from geomxai.train import CHECKPOINT_FORMAT, ConfigError, TrainConfig, train

pytestmark = pytest.mark.timeout(300)


class TestReadOnlyPlaces:
    @pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
    def test_train_into_a_new_out_dir(self, tmp_path, cli, read_only, code):
        ro = read_only(tmp_path / "ro", code)
        config = toml_config(tmp_path / "c.toml", ro / "runs" / "a")
        status, text = cli("train", "--config", config)
        assert status == 2
        line = one_error_line(text)
        assert f"'{ro / 'runs'}" in line and os.strerror(code).lower() in line
        assert "out_dir=" in line
        assert list(ro.iterdir()) == []

    @pytest.mark.parametrize("resume", ["true", "false"])
    def test_train_into_an_existing_run(self, tmp_path, run, cli, read_only, resume):
        before = sorted(p.relative_to(run) for p in run.rglob("*"))
        read_only(run)
        config = toml_config(tmp_path / "c.toml", run, epochs=2)
        status, text = cli("train", "--config", config, "--set", f"resume={resume}")
        assert status == 2
        line = one_error_line(text)
        assert "read-only file system" in line and str(run) in line
        assert sorted(p.relative_to(run) for p in run.rglob("*")) == before

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes through a chmod; simulated above")
    def test_train_into_a_folder_without_write_permission(self, tmp_path, cli):
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        try:
            status, text = cli("train", "--config", toml_config(tmp_path / "c.toml", ro / "a"))
        finally:
            ro.chmod(0o755)
        assert status == 2 and "permission denied" in one_error_line(text)

    def test_analyze_a_read_only_run_falls_back_to_no_cache(self, tmp_path, run, cli, read_only):
        read_only(run)
        status, text = cli("analyze", run, "--out", tmp_path / "r.nc", "--probe-size", 8)
        assert status == 0, text
        assert "is not writable" in text and "--cache DIR" in text and "Traceback" not in text
        assert not (run / "analysis").exists()
        with xr.open_dataset(tmp_path / "r.nc", engine="h5netcdf") as ds:
            assert list(ds["epoch"].values) == [0, 1]

    def test_analyze_with_the_cache_elsewhere(self, tmp_path, run, cli, read_only):
        read_only(run)
        cache, out = tmp_path / "cache", tmp_path / "r.nc"
        status, text = cli("analyze", run, "--cache", cache, "--out", out, "--probe-size", 8)
        assert status == 0 and "not writable" not in text
        assert len(list((tmp_path / "cache").glob("epoch_*.nc"))) == 2
        assert not (run / "analysis").exists()

    def test_analyze_without_a_cache(self, tmp_path, run, cli, caplog):
        status, text = cli(
            "analyze", run, "--no-cache", "--out", tmp_path / "r.nc", "--probe-size", 8
        )
        assert status == 0 and "WARNING" not in text
        assert not (run / "analysis").exists()

    def test_an_unwritable_explicit_cache_is_an_error(self, tmp_path, run, read_only):
        ro = read_only(tmp_path / "ro")
        with pytest.raises(OSError, match="Read-only"):
            analyze_run(run, probe_size=8, progress=False, cache=ro / "cache")

    def test_analyze_out_on_a_read_only_mount_fails_before_the_analysis(
        self, tmp_path, run, cli, read_only, monkeypatch
    ):
        import geomxai.study

        def never(*args, **kwargs):
            raise AssertionError("the analysis ran before --out was checked")

        monkeypatch.setattr(geomxai.study, "analyze_runs", never)
        ro = read_only(tmp_path / "ro")
        status, text = cli("analyze", run, "--out", ro / "r.nc")
        assert status == 2
        line = one_error_line(text)
        assert repr(str(ro / "r.nc")) in line and "read-only file system" in line

    def test_report_out_on_a_read_only_mount(self, tmp_path, cli, read_only):
        ro = read_only(tmp_path / "ro")
        status, text = cli("report", tmp_path / "results.nc", "--out", ro / "report")
        assert status == 2 and "read-only file system" in one_error_line(text)

    def test_study_into_a_read_only_runs_folder(self, tmp_path, cli, read_only):
        ro = read_only(tmp_path / "ro")
        profile = toml_config(tmp_path / "p.toml", tmp_path / "unused")
        profile.write_text(profile.read_text() + '[study]\nname = "s"\nregimes = ["regular"]\n')
        status, text = cli("study", "--profile", profile, "--runs", ro, "--reports", ro)
        assert status == 2
        line = one_error_line(text)
        assert f"'{ro / 's'}" in line and "read-only file system" in line

    def test_verbose_keeps_the_traceback(self, tmp_path, read_only):
        ro = read_only(tmp_path / "ro")
        config = toml_config(tmp_path / "c.toml", ro / "a")
        with pytest.raises(OSError) as info:
            main(["-v", "train", "--config", str(config)])
        assert info.value.errno == errno.EROFS

    @pytest.mark.parametrize(
        ("code", "fix"),
        [
            (errno.EACCES, "change its permissions"),
            (errno.EROFS, "writable file system"),
            (errno.ENOSPC, "free space"),
            (errno.EDQUOT, "quota"),
            (errno.EISDIR, "give a file path"),
            (errno.ENOTDIR, "a file stands where a folder must be"),
            (errno.EIO, "run with -v"),
        ],
    )
    def test_each_os_error_names_the_path_and_a_fix(self, code, fix):
        line = os_error_message(OSError(code, os.strerror(code), "/some/where"))
        assert line.startswith("'/some/where': ") and fix in line and "\n" not in line

    def test_our_own_file_messages_pass_through(self):
        err = FileNotFoundError("no results file at 'x'; write one with `geomxai analyze`")
        assert os_error_message(err) == str(err)


def _results(tmp_path):
    return save_results(xr.Dataset({"probe_acc": ("epoch", np.arange(3.0))}), tmp_path / "r.nc")


class TestBadResultsFiles:
    def test_missing(self, tmp_path, cli):
        status, text = cli("report", tmp_path / "nope.nc", "--out", tmp_path / "rep")
        line = one_error_line(text)
        assert status == 2 and "no results file at" in line and "geomxai analyze" in line

    def test_truncated(self, tmp_path, cli):
        path = _results(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        status, text = cli("report", path, "--out", tmp_path / "rep")
        line = one_error_line(text)
        assert status == 2 and "truncated or damaged" in line and "xarray's IO backends" not in line

    @pytest.mark.parametrize("content", [b"", b"hello, not netCDF", b"CDF\x01classic"])
    def test_foreign(self, tmp_path, cli, content):
        path = tmp_path / "r.nc"
        path.write_bytes(content)
        status, text = cli("report", path, "--out", tmp_path / "rep")
        line = one_error_line(text)
        assert status == 2 and "is not a readable results file" in line

    def test_a_netcdf_file_that_is_not_geomxai_results(self, tmp_path, cli):
        path = save_results(xr.Dataset({"t2m": ("x", np.arange(3.0))}), tmp_path / "era5.nc")
        status, text = cli("report", path, "--out", tmp_path / "rep")
        assert status == 2 and "none of geomxai's result variables" in one_error_line(text)

    def test_a_folder(self, tmp_path, cli):
        (tmp_path / "study").mkdir()
        _results(tmp_path / "study")
        status, text = cli("report", tmp_path / "study", "--out", tmp_path / "rep")
        line = one_error_line(text)
        assert status == 2 and "is a folder, not a results file" in line and "r.nc" not in line

    def test_open_results_names_the_bad_file_among_many(self, tmp_path):
        good = _results(tmp_path)
        bad = tmp_path / "bad.nc"
        bad.write_bytes(good.read_bytes()[:100])
        with pytest.raises(ValueError, match="'.*bad.nc' is not a readable results file"):
            open_results([good, bad])

    def test_analyze_out_that_is_a_folder(self, tmp_path, run, cli):
        (tmp_path / "out").mkdir()
        status, text = cli("analyze", run, "--out", tmp_path / "out")
        assert status == 2 and "a folder stands where a file must go" in one_error_line(text)


def _spec_payload():
    from geomxai.train import build_from_spec, model_spec

    config = TrainConfig(dataset="digits", model="cnn2", group_size=8)
    spec = model_spec(config, in_channels=1, num_classes=10, image_size=8)
    return {
        "config": config.to_dict(),
        "model_spec": spec,
        "model": build_from_spec(spec).state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"base_lr": 0.1, "step": 0},
        "epoch": 1,
    }


class TestBadCheckpoints:
    @pytest.mark.parametrize(
        "content",
        [np.random.default_rng(0).bytes(4096), b"hello, I am a text file\n", b"\x00" * 64],
        ids=["random-bytes", "text", "zeros"],
    )
    def test_not_a_torch_file(self, tmp_path, content):
        path = tmp_path / "epoch_0001.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="is not a checkpoint: it is not a PyTorch file"):
            load_checkpoint(path)

    def test_random_bytes_are_not_called_code(self, tmp_path, cli):
        path = tmp_path / "model.pt"
        path.write_bytes(np.random.default_rng(1).bytes(4096))
        status, text = cli("analyze", "--model", path, "--data", "digits", "--out", tmp_path / "r")
        line = one_error_line(text)
        assert status == 2 and "not a PyTorch file" in line
        assert "objects other than tensors" not in line

    def test_empty_file(self, tmp_path):
        path = tmp_path / "c.pt"
        path.write_bytes(b"")
        with pytest.raises(CheckpointError, match="is empty"):
            read_checkpoint(path)

    @pytest.mark.parametrize("missing", ["model_spec", "model", "config"])
    def test_a_missing_entry_is_named_with_its_writer(self, tmp_path, missing):
        payload = _spec_payload()
        del payload[missing]
        path = save_checkpoint(tmp_path / "c.pt", payload)
        with pytest.raises(CheckpointError, match=rf"no '{missing}' entry \(written by geomxai"):
            load_checkpoint(path)

    def test_a_foreign_writer_is_said(self, tmp_path):
        payload = {"format": CHECKPOINT_FORMAT, "version": 1, "model": {}}
        torch.save(payload, tmp_path / "c.pt")
        with pytest.raises(CheckpointError, match="not written by this geomxai's trainer"):
            load_checkpoint(tmp_path / "c.pt")

    @pytest.mark.parametrize(
        ("key", "value", "match"),
        [
            ("model_spec", "cnn2", "'model_spec' entry must be dict; got str"),
            ("model", [1, 2], "'model' entry must be a mapping of names to tensors; got list"),
            ("model", {"w": 1.0}, "'model' entry must be a mapping of names to tensors"),
            ("config", 3, "'config' entry must be dict; got int"),
            ("model_spec", {"name": "cnn2"}, "its model_spec cannot be built"),
            (
                "model_spec",
                {"name": "nope", "in_channels": 1, "num_classes": 2, "image_size": 8},
                "its model_spec cannot be built",
            ),
            ("config", {"epochs": "three"}, "its config is not a valid TrainConfig"),
        ],
    )
    def test_wrong_types_are_a_checkpoint_error(self, tmp_path, key, value, match):
        payload = {**_spec_payload(), key: value}
        path = save_checkpoint(tmp_path / "c.pt", payload)
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)

    @pytest.mark.parametrize(
        ("key", "value"), [("optimizer", None), ("epoch", "1"), ("epoch", True)]
    )
    def test_resume_from_a_checkpoint_with_wrong_entries(self, tmp_path, run, key, value):
        from geomxai.train import read_checkpoint as read

        path = run / "checkpoints" / "epoch_0001.pt"
        payload = read(path)
        if value is None:
            del payload[key]
        else:
            payload[key] = value
        torch.save(payload, path)
        config = TrainConfig.from_dict({**read(run / "checkpoints" / "epoch_0000.pt")["config"]})
        with pytest.raises(CheckpointError, match=f"'{key}'"):
            train(config.replace(out_dir=str(run), resume=True, epochs=2))

    def test_a_run_with_a_bad_checkpoint_through_the_cli(self, tmp_path, run, cli):
        path = run / "checkpoints" / "epoch_0001.pt"
        payload = read_checkpoint(path)
        del payload["model_spec"]
        torch.save(payload, path)
        status, text = cli("analyze", run, "--no-cache", "--out", tmp_path / "r.nc")
        line = one_error_line(text)
        assert status == 2 and "no 'model_spec' entry" in line and "KeyError" not in line


class TestAFolderNamedLikeACheckpoint:
    def test_the_reader_ignores_it_with_a_warning(self, run, caplog):
        (run / "checkpoints" / "epoch_0002.pt").mkdir()
        with caplog.at_level(logging.WARNING):
            assert sorted(list_checkpoints(run)) == [0, 1]
        assert "epoch_0002.pt: it is not a checkpoint file" in caplog.text

    def test_loading_it_says_it_is_a_folder(self, tmp_path):
        (tmp_path / "epoch_0001.pt").mkdir()
        with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
            load_checkpoint(tmp_path / "epoch_0001.pt")

    @pytest.mark.parametrize("resume", [True, False])
    def test_the_trainer_refuses_it_before_training(self, tmp_path, resume):
        out = tmp_path / "run"
        (out / "checkpoints" / "epoch_0001.pt").mkdir(parents=True)
        config = TrainConfig(dataset="digits", model="cnn2", group_size=8, out_dir=str(out))
        with pytest.raises(ConfigError, match="epoch_0001.pt' is not a checkpoint file"):
            train(config.replace(resume=resume, epochs=1, train_subset=64, batch_size=32))
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001.pt"]

    def test_the_analysis_of_its_run_goes_on_without_it(self, tmp_path, run, cli):
        (run / "checkpoints" / "epoch_0001.pt").unlink()
        (run / "checkpoints" / "epoch_0001.pt").mkdir()
        status, text = cli("analyze", run, "--out", tmp_path / "r.nc", "--probe-size", 8)
        assert status == 0 and "not a checkpoint file" in text

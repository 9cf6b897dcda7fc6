"""The second adversarial pass (issue 24), with real faults: a real full tmpfs, real forged
checkpoints (torch.save of plain data), real damaged run files, real HDF5 files that reach
outside themselves, a real PNG whose header claims 40000x40000 pixels.

Each class is one item of the issue; each test fails on the code before the fix.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import STUDY_DESIGN, TRAIN_FIELDS, one_error_line, toml_config

from geomxai.rundir import read_metrics, read_run
from geomxai.train import (
    CheckpointError,
    TrainConfig,
    check_run_identity,
    load_checkpoint,
    read_identity,
    save_checkpoint,
    train,
)

pytestmark = pytest.mark.timeout(300)


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory, by relative path, with its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _forge(path: Path, **changes) -> None:
    """Rewrite a checkpoint with some entries changed (plain data, as an attacker would)."""
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is _DROP:
            payload.pop(key, None)
        else:
            payload[key] = value
    torch.save(payload, path)


_DROP = object()


# -- a real small disk: the small_disk fixture of conftest.py -----------------------------------
def _free(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system until about ``leave`` bytes are free."""
    with open(folder / "ballast", "wb") as fh:
        fh.write(b"\0" * max(_free(folder) - leave, 0))


class TestTrainOnARealFullDisk:
    """Item 3: torch.save on a full disk said "[enforce fail at inline_container.cc] unexpected
    pos", with no path and no "no space left"."""

    def test_train_names_the_checkpoint_and_the_space_it_needs(
        self, tmp_path, small_disk, trained_run, cli
    ):
        disk = small_disk(1024)
        out = Path(shutil.copytree(trained_run, disk / "run"))
        config = toml_config(tmp_path / "c.toml", out, epochs=2)
        before = _snapshot(out / "checkpoints")
        _fill(disk, 24 * 1024)  # room for config.json and metrics, not for a 35 kB checkpoint
        status, text = cli("train", "--config", config, "--set", "resume=true")
        assert status == 2
        line = one_error_line(text)
        assert repr(str(out / "checkpoints" / "epoch_0002.pt")) in line
        assert "no space left on device (need about" in line and "MB" in line
        assert "inline_container" not in line and "unexpected pos" not in line
        assert _snapshot(out / "checkpoints") == before  # no temporary file, nothing changed
        (disk / "ballast").unlink()
        assert cli("train", "--config", config, "--set", "resume=true")[0] == 0
        assert [r["epoch"] for r in read_metrics(out)] == [1, 2]

    def test_a_disk_that_fills_during_the_write_names_the_file(
        self, small_disk, trained_run, monkeypatch
    ):
        # The free-space check passes (another writer fills the disk right after it): the
        # write itself meets the real ENOSPC of the tmpfs.
        disk = small_disk(256)
        payload = torch.load(trained_run / "checkpoints" / "epoch_0001.pt", weights_only=True)
        old = save_checkpoint(disk / "epoch_0001.pt", payload)
        before = old.read_bytes()
        _fill(disk, 8 * 1024)
        monkeypatch.setattr(
            shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(2**40, 0, 2**40)
        )
        with pytest.raises(OSError, match=r"No space left on device \(need about") as info:
            save_checkpoint(disk / "epoch_0001.pt", payload)
        assert info.value.filename == str(disk / "epoch_0001.pt")
        assert old.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["ballast", "epoch_0001.pt"]


# -- forged resume checkpoints -------------------------------------------------------------------
def _bad_optimizer(payload):
    optimizer = payload["optimizer"]
    group = dict(optimizer["param_groups"][0])
    return {**optimizer, "param_groups": [{**group, "params": group["params"][:-1]}]}


def _bad_momentum(payload):
    optimizer = payload["optimizer"]
    state = {k: {"momentum_buffer": torch.zeros(3)} for k in optimizer["state"]}
    return {**optimizer, "state": state}


def _nan_weights(payload):
    model = dict(payload["model"])
    name = next(k for k, v in model.items() if v.is_floating_point())
    model[name] = torch.full_like(model[name], math.nan)
    return model


FORGERIES = {
    # item 4: the resume wiped metrics.jsonl before failing on this
    "epoch=-3": {"epoch": -3},
    "epoch of another file": {"epoch": 7},
    # item 8
    "scheduler={}": {"scheduler": {}},
    "scheduler base_lr=nan": {"scheduler": {"name": "cosine", "base_lr": math.nan, "step": 2}},
    "metrics={'x': tensor}": {"metrics": {"x": torch.ones(2)}},
    "metrics=[1, 2, 3]": {"metrics": [1, 2, 3]},
    "metrics of another epoch": {"metrics": {"epoch": 5, "test_acc": 0.5}},
    "optimizer groups that do not fit": _bad_optimizer,
    "momentum of the wrong shape": _bad_momentum,
    "optimizer={}": {"optimizer": {}},
    # item 10
    "NaN weights": _nan_weights,
}


class TestAFailedResumeChangesNothing:
    """Items 4 and 8: a forged last checkpoint is refused before anything of the run is
    rewritten; the one line names the checkpoint."""

    @pytest.mark.parametrize("forgery", list(FORGERIES))
    def test_forged_last_checkpoint(self, tmp_path, run, cli, forgery):
        last = run / "checkpoints" / "epoch_0001.pt"
        change = FORGERIES[forgery]
        if callable(change):
            payload = torch.load(last, weights_only=True)
            key = {"_nan_weights": "model"}.get(change.__name__, "optimizer")
            change = {key: change(payload)}
        _forge(last, **change)
        before = _snapshot(run)
        assert read_metrics(run), "the run has a metrics line to lose"
        config = toml_config(tmp_path / "c.toml", run, epochs=2)
        status, text = cli("train", "--config", config, "--set", "resume=true")
        assert status == 2, text
        line = one_error_line(text)
        assert repr(str(last)) in line, line
        assert _snapshot(run) == before

    def test_a_forged_earlier_checkpoint_that_the_resume_reads(self, tmp_path, run, cli):
        # metrics.jsonl lost its line for epoch 1: the resume restores it from checkpoint 1's
        # copy, which must be a metrics line; checked before anything is written.
        train(TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(run), "epochs": 2, "resume": True}))
        (run / "metrics.jsonl").write_text(json.dumps(read_metrics(run)[1], sort_keys=True) + "\n")
        first = run / "checkpoints" / "epoch_0001.pt"
        _forge(first, metrics=[1, 2, 3])
        before = _snapshot(run)
        config = toml_config(tmp_path / "c.toml", run, epochs=3)
        status, text = cli("train", "--config", config, "--set", "resume=true")
        assert status == 2
        assert repr(str(first)) in one_error_line(text)
        assert _snapshot(run) == before

    def test_an_untouched_run_still_resumes(self, tmp_path, run, cli):
        config = toml_config(tmp_path / "c.toml", run, epochs=2)
        assert cli("train", "--config", config, "--set", "resume=true")[0] == 0
        assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


# -- damaged run files ---------------------------------------------------------------------------
DAMAGED_ROWS = {
    "list": '{"epoch": [1]}',
    "null": '{"epoch": null}',
    "1e999": '{"epoch": 1e999}',
    "string": '{"epoch": "x"}',
    "negative": '{"epoch": -1}',
    "bool": '{"epoch": true}',
}

DAMAGED_CONFIGS = {
    "empty object": {},
    "dataset=5": {"dataset": 5},
    "seed='x'": {"seed": "x"},
    "regime=null": {"regime": None},
}


class TestDamagedRunFiles:
    """Item 7: damaged metrics.jsonl rows and config.json gave tracebacks (TypeError,
    OverflowError, KeyError, AttributeError) or messages that named no file."""

    @pytest.mark.parametrize("row", list(DAMAGED_ROWS))
    def test_a_damaged_metrics_row(self, tmp_path, run, cli, row):
        metrics = run / "metrics.jsonl"
        good = metrics.read_text()
        metrics.write_text(DAMAGED_ROWS[row] + "\n" + good)
        with pytest.raises(ValueError, match="line 1: its 'epoch' must be a non-negative"):
            read_run(run)
        before = _snapshot(run)
        status, text = cli("analyze", run, "--out", tmp_path / "r.nc", "--no-cache")
        assert status == 2
        line = one_error_line(text)
        assert repr(str(metrics)) in line and "line 1" in line
        config = toml_config(tmp_path / "c.toml", run, epochs=2)
        status, text = cli("train", "--config", config, "--set", "resume=true")
        assert status == 2
        assert repr(str(metrics)) in one_error_line(text)
        assert _snapshot(run) == before

    @pytest.mark.parametrize("damage", list(DAMAGED_CONFIGS))
    def test_a_damaged_config_json(self, tmp_path, run, cli, damage):
        path = run / "config.json"
        config = json.loads(path.read_text())
        changed = {} if damage == "empty object" else {**config, **DAMAGED_CONFIGS[damage]}
        path.write_text(json.dumps(changed))
        status, text = cli("analyze", run, "--out", tmp_path / "r.nc", "--no-cache")
        assert status == 2
        line = one_error_line(text)
        assert repr(str(path)) in line and "restore it from a checkpoint" in line.lower()

    def test_a_config_json_that_is_not_a_train_config(self, tmp_path, run, cli):
        path = run / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "lr": "fast"}))
        status, text = cli("analyze", run, "--out", tmp_path / "r.nc", "--no-cache")
        assert status == 2
        assert repr(str(path)) in one_error_line(text)


# -- a checkpoint of another run -----------------------------------------------------------------
@pytest.fixture(scope="module")
def other_run(tmp_path_factory) -> Path:
    """A run of another seed and regime."""
    out = tmp_path_factory.mktemp("other") / "run"
    fields = {**TRAIN_FIELDS, "seed": 1, "regime": "dbn", "out_dir": str(out)}
    return train(TrainConfig(**fields))


class TestACheckpointOfAnotherRun:
    """Item 6: a checkpoint copied in from another run was analysed and labelled with this
    run's regime and seed. Refused (not warned): results labelled wrongly end up in papers."""

    def test_checkpoints_carry_their_run_identity(self, run):
        identity = read_identity(run / "checkpoints" / "epoch_0001.pt")
        assert identity["seed"] == 0 and identity["regime"] == "regular"
        assert len(identity["config_hash"]) == 16
        raw = torch.load(run / "checkpoints" / "epoch_0000.pt", weights_only=True)
        assert raw["identity"] == identity  # written, not only derived

    def test_a_copied_checkpoint_is_refused(self, tmp_path, run, other_run, cli):
        copied = run / "checkpoints" / "epoch_0002.pt"
        shutil.copy(other_run / "checkpoints" / "epoch_0001.pt", copied)
        status, text = cli("analyze", run, "--out", tmp_path / "r.nc", "--no-cache")
        assert status == 2
        line = one_error_line(text)
        assert repr(str(copied)) in line and "belongs to another run" in line
        assert "seed 1" in line and "'dbn'" in line
        assert not (tmp_path / "r.nc").exists()

    def test_same_seed_and_regime_but_another_config(self, tmp_path, run):
        # Identity is more than the labels: a run with another lr is another run.
        other = train(
            TrainConfig(**{**TRAIN_FIELDS, "lr": 0.01, "out_dir": str(tmp_path / "other")})
        )
        shutil.copy(other / "checkpoints" / "epoch_0001.pt", run / "checkpoints" / "epoch_0001.pt")
        config = json.loads((run / "config.json").read_text())
        with pytest.raises(CheckpointError, match="config_hash"):
            check_run_identity(run, config, list((run / "checkpoints").glob("*.pt")))

    def test_a_checkpoint_without_identity_still_loads_and_is_checked_by_its_config(self, run):
        path = run / "checkpoints" / "epoch_0001.pt"
        _forge(path, identity=_DROP)  # as written before identities
        model, config = load_checkpoint(path)
        assert config.seed == 0
        config_json = json.loads((run / "config.json").read_text())
        check_run_identity(run, config_json, [path])  # its config says it is this run's
        assert read_identity(path) == read_identity(run / "checkpoints" / "epoch_0000.pt")

    def test_a_moved_and_extended_run_keeps_its_identity(self, tmp_path, run):
        moved = Path(shutil.move(run, tmp_path / "moved"))
        train(TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(moved), "epochs": 2, "resume": True}))
        config = json.loads((moved / "config.json").read_text())
        check_run_identity(moved, config, sorted((moved / "checkpoints").glob("*.pt")))


# -- checkpoints too big or broken ---------------------------------------------------------------
class TestCheckpointSpecsThatAllocateOrBreak:
    """Item 10: a 15 kB checkpoint whose model_spec asks for num_classes=10**13 made torch try
    to allocate 1280000000000000 bytes; in_channels=-3 gave a RuntimeError; NaN weights were
    refused without naming the checkpoint."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [("num_classes", 10**13), ("in_channels", -3), ("image_size", 0), ("num_classes", 2.5)],
    )
    def test_a_forged_spec_is_a_checkpoint_error_naming_the_file(self, run, field, value):
        path = run / "checkpoints" / "epoch_0001.pt"
        payload = torch.load(path, weights_only=True)
        _forge(path, model_spec={**payload["model_spec"], field: value})
        with pytest.raises(CheckpointError, match=repr(str(path)).replace("\\", "\\\\")):
            load_checkpoint(path)

    def test_a_spec_that_does_not_fit_the_weights_allocates_nothing(self, run):
        path = run / "checkpoints" / "epoch_0001.pt"
        payload = torch.load(path, weights_only=True)
        _forge(path, model_spec={**payload["model_spec"], "num_classes": 10**13})
        with pytest.raises(CheckpointError, match="do not fit its model_spec"):
            load_checkpoint(path)

    def test_nan_weights_name_the_checkpoint(self, run, cli):
        path = run / "checkpoints" / "epoch_0001.pt"
        _forge(path, model=_nan_weights(torch.load(path, weights_only=True)))
        with pytest.raises(CheckpointError, match="NaN or infinite") as info:
            load_checkpoint(path)
        assert repr(str(path)) in str(info.value)
        status, text = cli("layers", path)
        assert status == 2 and repr(str(path)) in one_error_line(text)


# -- a lock-named link in a study's folders ------------------------------------------------------


class TestAStudyRefusesALockLinkInItsFolders:
    """Item 1 (study side): with `RUNS/NAME/.geomxai.lock -> victim`, `geomxai study --stage
    train --runs RUNS` exited 0 and passed the link by (the study no longer locks RUNS/NAME/).
    Safe, but whoever put it there meant a lock to write through it: refused before any work,
    naming the link and the fix, the victim untouched."""

    @pytest.fixture
    def victim(self, tmp_path) -> Path:
        path = tmp_path / "elsewhere" / "victim.txt"
        path.parent.mkdir()
        path.write_text("the victim's own contents\n")
        return path

    def _study(self, tmp_path, cli, stage="train"):
        design = tmp_path / "d.toml"
        design.write_text(STUDY_DESIGN)
        argv = ["study", design, "--stage", stage, "--runs", tmp_path / "runs"]
        return cli(*argv, "--reports", tmp_path / "reports")

    @pytest.mark.parametrize("where", ["runs folder", "run folder"])
    @pytest.mark.parametrize("stage", ["train", "analyse"])
    def test_a_symlink_is_refused(self, tmp_path, cli, victim, where, stage):
        from geomxai.rundir import LOCK_FILE

        folder = tmp_path / "runs" / "s"
        if where == "run folder":
            folder = folder / "regular-s0"
        folder.mkdir(parents=True)
        link = folder / LOCK_FILE
        link.symlink_to(victim)
        status, text = self._study(tmp_path, cli, stage)
        assert status == 2
        line = one_error_line(text)
        assert repr(str(link)) in line and "symbolic link" in line and "Remove it" in line
        assert victim.read_text() == "the victim's own contents\n"
        assert link.is_symlink() and Path(os.readlink(link)) == victim
        assert [p.name for p in folder.iterdir()] == [LOCK_FILE]  # nothing trained

    def test_a_hard_link_is_refused(self, tmp_path, cli, victim):
        from geomxai.rundir import LOCK_FILE

        folder = tmp_path / "runs" / "s"
        folder.mkdir(parents=True)
        os.link(victim, folder / LOCK_FILE)
        status, text = self._study(tmp_path, cli)
        assert status == 2 and "hard link" in one_error_line(text)
        assert victim.read_text() == "the victim's own contents\n"

    def test_the_python_entry_points_refuse_it_too(self, tmp_path, victim):
        from geomxai.pipeline import run_study
        from geomxai.rundir import LOCK_FILE

        design = tmp_path / "d.toml"
        design.write_text(STUDY_DESIGN)
        link = tmp_path / "runs" / "s" / LOCK_FILE
        link.parent.mkdir(parents=True)
        link.symlink_to(victim)
        with pytest.raises(OSError, match="symbolic link"):
            run_study(design, runs_root=tmp_path / "runs", reports_root=tmp_path / "r")
        assert victim.read_text() == "the victim's own contents\n"
        assert not (tmp_path / "r").exists()

    def test_a_plain_leftover_lock_file_is_no_reason_to_stop(self, tmp_path, cli):
        from geomxai.rundir import LOCK_FILE, read_run

        folder = tmp_path / "runs" / "s"
        folder.mkdir(parents=True)
        (folder / LOCK_FILE).write_text('{"pid": 1}\n')  # an older version's study lock
        status, _ = self._study(tmp_path, cli)
        assert status == 0
        assert read_run(folder / "regular-s0").checkpoints


class TestTwoStudiesOfOneName:
    """Section 3 of docs/reliability.md: a study no longer locks its runs folder; two studies of
    one name share the plan run by run (each run's claim and its training lock), so both
    finish and every run is trained once, its metrics written by one trainer."""

    def test_two_processes_share_the_plan(self, tmp_path):
        import subprocess
        import sys

        cells = "".join(
            f'\n[[cells]]\nname = "{r}"\nregime = "{r}"\n' for r in ("sgt", "dbn", "saliencydecor")
        )
        design = tmp_path / "d.toml"
        design.write_text(STUDY_DESIGN + cells)
        argv = [sys.executable, "-m", "geomxai.cli", "study", str(design), "--stage", "train"]
        argv += ["--runs", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports")]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=280) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        runs = sorted((tmp_path / "runs" / "s").iterdir())
        assert [r.name for r in runs] == [
            "dbn-s0", "regular-s0", "saliencydecor-s0", "sgt-s0",
        ]  # fmt: skip
        for run in runs:
            assert [row["epoch"] for row in read_metrics(run)] == [1]  # one trainer each
            assert sorted(read_run(run).checkpoints) == [0, 1]


# -- profiles: geomxai train --config ------------------------------------------------------------
# case: (the whole file, or None for the tiny training fields at the top level followed by
# ``extra``; extra; what the one error line says)
PROFILE_FAULTS = {
    "train = 5": ("train = 5\n", "", "[train] must be a table; got int"),
    "[[train]]": ("[[train]]\ndataset = 'digits'\n", "", "[train] must be a table; got list"),
    'train = "x"': ('train = "x"\n', "", "[train] must be a table; got str"),
    "study = 5": (None, "study = 5", "[study] must be a table; got int"),
    "analysis = 5": (None, "analysis = 5", "[analysis] must be a table; got int"),
    "[analysis] bogus = 1": (
        None,
        "[analysis]\nbogus = 1",
        "[analysis] bogus is not an analysis option",
    ),
    "[study] name = 5": (None, "[study]\nname = 5", "[study] name must be a non-empty string"),
    "[study] nmae": (
        None,
        '[study]\nnmae = "s"',
        "[study] nmae is not a known key (did you mean 'name'?)",
    ),
    "[study] seeds = 5": (
        None,
        "[study]\nseeds = 5",
        "[study] seeds must be a non-empty list of distinct integers",
    ),
    # What the design reader refuses, the trainer refuses too (one list of keys and choices).
    "[study] seeds = [0, 0]": (
        None,
        "[study]\nseeds = [0, 0]",
        "[study] seeds must be a non-empty list of distinct integers",
    ),
    '[analysis] checkpoints = "fianl"': (
        None,
        '[analysis]\ncheckpoints = "fianl"',
        "[analysis] checkpoints must be one of all, final, spread",
    ),
    '[analysis] keep = "bogus"': (
        None,
        '[analysis]\nkeep = "bogus"',
        "[analysis] keep must be one of all, final",
    ),
    "[analysis] probe_size = nan": (
        None,
        "[analysis]\nprobe_size = nan",
        "[analysis] is not a valid set of analysis options: probe_size",
    ),
    "[analysis] control = 1": (
        None,
        "[analysis]\ncontrol = 1",
        "[analysis] control must be true or false",
    ),
}


class TestProfilesOfTrainConfig:
    """Item 9: `geomxai train --config` with `train = 5`, `[[train]]` or `train = "x"` gave a
    traceback ('int' object is not iterable, "dictionary update sequence element #0"); with
    `[analysis] bogus = 1`, `study = 5` or `[study] name = 5` it trained and exited 0, those
    tables dropped unread. Each is one line naming the file and the key, before any work."""

    @staticmethod
    def _profile(tmp_path: Path, case: str) -> tuple[Path, str]:
        whole, extra, expected = PROFILE_FAULTS[case]
        path = tmp_path / "c.toml"
        if whole is None:
            toml_config(path, tmp_path / "run")
            path.write_text(path.read_text() + extra + "\n")
        else:
            path.write_text(whole)
        return path, expected

    @pytest.mark.parametrize("case", list(PROFILE_FAULTS))
    def test_train_config_refuses_the_profile(self, tmp_path, cli, case):
        path, expected = self._profile(tmp_path, case)
        status, text = cli("train", "--config", path)
        assert status == 2
        line = one_error_line(text)
        assert repr(str(path)) in line and expected in line
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize("case", list(PROFILE_FAULTS))
    def test_from_toml_refuses_the_profile(self, tmp_path, case):
        from geomxai.train import ConfigError

        path, expected = self._profile(tmp_path, case)
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_toml(path)
        assert repr(str(path)) in str(info.value) and expected in str(info.value)

    def test_shared_tables_that_are_right_still_train(self, tmp_path):
        path = toml_config(tmp_path / "c.toml", tmp_path / "run")
        path.write_text(
            path.read_text()
            + '[study]\nname = "s"\nregimes = ["regular", "sgt"]\nseeds = [0, 1]\n'
            + '[analysis]\nprobe_size = 64\ncheckpoints = "final"\ncontrol = false\n'
        )
        config = TrainConfig.from_toml(path)
        assert config.out_dir == str(tmp_path / "run") and config.epochs == 1

    def test_every_shipped_design_reads_as_a_train_config(self):
        # `geomxai train --config configs/X.toml` reads a design's [train] table: the check
        # must take every table and key a shipped design holds.
        root = Path(__file__).resolve().parents[2] / "configs"
        designs = sorted(root.glob("*.toml"))
        assert designs
        for design in designs:
            text = design.read_text()
            if "[train]" in text:
                TrainConfig.from_toml(design)


# -- results files that read other files ---------------------------------------------------------
def _results_with(tmp_path: Path, kind: str, *, userblock: int = 0) -> tuple[Path, bytes]:
    """A netCDF results file whose ``test_acc`` reaches another file the HDF5 way ``kind``
    (made with h5py, as an attacker would), and the bytes it would read there.

    ``userblock``: the file is written by h5netcdf with an HDF5 user block of that many bytes
    first, so its HDF5 signature is at that offset, not at byte 0.
    """
    import h5netcdf
    import h5py
    import xarray as xr

    from geomxai.study import save_results

    secret = np.frombuffer(b"SECRET!!" * 3, dtype="<f8").copy()
    path = tmp_path / "results.nc"
    if userblock:
        with h5netcdf.File(path, "w", userblock_size=userblock) as fh:
            fh.dimensions = {"regime": 3}
            fh.create_variable(
                "regime",
                ("regime",),
                data=np.array(["a", "b", "c"], dtype=object),
                dtype=h5py.string_dtype(),
            )
            fh.create_variable("test_acc", ("regime",), data=np.array([0.1, 0.2, 0.3]))
    else:
        save_results(
            xr.Dataset(
                {"test_acc": ("regime", [0.1, 0.2, 0.3])}, coords={"regime": ["a", "b", "c"]}
            ),
            path,
        )
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["data"] = secret
    raw = tmp_path / "other.bin"
    raw.write_bytes(secret.tobytes())
    with h5py.File(path, "r+") as fh:
        del fh["test_acc"]
        if kind == "external storage":
            fh.create_dataset("test_acc", shape=(3,), dtype="<f8", external=[(str(raw), 0, 24)])
        elif kind == "virtual dataset":
            layout = h5py.VirtualLayout(shape=(3,), dtype="<f8")
            layout[:] = h5py.VirtualSource(str(other), "data", shape=(3,))
            fh.create_virtual_dataset("test_acc", layout)
        elif kind == "external link":
            fh["test_acc"] = h5py.ExternalLink(str(other), "/data")
        if kind != "external link":
            fh["test_acc"].dims[0].attach_scale(fh["regime"])
    return path, secret.tobytes()


OUTSIDE = ["external storage", "virtual dataset", "external link"]


class TestResultsThatReadOtherFiles:
    """Item 5: a results.nc whose test_acc is HDF5 external storage made `geomxai report` and
    `open_results_file` show another file's bytes. Refused before xarray opens the file."""

    @pytest.mark.parametrize("kind", OUTSIDE)
    def test_open_results_file_refuses(self, tmp_path, kind):
        from geomxai.study import open_results, open_results_file

        path, _ = _results_with(tmp_path, kind)
        for opener in (open_results_file, open_results):
            with pytest.raises(ValueError, match="would read other files") as info:
                opener(path)
            assert repr(str(path)) in str(info.value)

    @pytest.mark.parametrize("kind", ["external storage", "virtual dataset"])
    def test_the_fault_is_real(self, tmp_path, kind):
        # Without the check, h5py reads the other file's bytes through the results file.
        import h5py

        path, secret = _results_with(tmp_path, kind)
        with h5py.File(path, "r") as fh:
            assert fh["test_acc"][()].tobytes() == secret

    @pytest.mark.parametrize("kind", OUTSIDE)
    def test_report_exits_with_one_line(self, tmp_path, cli, kind):
        path, _ = _results_with(tmp_path, kind)
        status, text = cli("report", path, "--out", tmp_path / "report")
        assert status == 2
        line = one_error_line(text)
        assert repr(str(path)) in line and kind.split()[-1] in line
        assert "SECRET" not in text and not (tmp_path / "report").exists()

    @pytest.mark.parametrize("userblock", [512, 2048])
    @pytest.mark.parametrize("kind", OUTSIDE)
    def test_a_user_block_does_not_hide_it(self, tmp_path, cli, kind, userblock):
        # HDF5 looks for its signature at 0, 512, 1024, 2048, ...: the check used to look at
        # byte 0 only and let such a file through (`geomxai report` exited 0 showing the bytes).
        import h5py

        from geomxai.study import open_results_file

        path, secret = _results_with(tmp_path, kind, userblock=userblock)
        assert path.read_bytes()[:8] != b"\x89HDF\r\n\x1a\n"
        with h5py.File(path, "r") as fh:
            assert fh.userblock_size == userblock
            if kind != "external link":
                assert fh["test_acc"][()].tobytes() == secret  # the fault is real
        with pytest.raises(ValueError, match="would read other files") as info:
            open_results_file(path)
        assert repr(str(path)) in str(info.value)
        status, text = cli("report", path, "--out", tmp_path / "report")
        assert status == 2
        line = one_error_line(text)
        assert repr(str(path)) in line and kind.split()[-1] in line
        assert "SECRET" not in text and not (tmp_path / "report").exists()

    def test_a_user_block_file_without_outside_reads_opens(self, tmp_path):
        import h5netcdf

        from geomxai.study import open_results_file

        path = tmp_path / "ub.nc"
        with h5netcdf.File(path, "w", userblock_size=512) as fh:
            fh.dimensions = {"regime": 2}
            fh.create_variable("test_acc", ("regime",), data=np.array([0.25, 0.5]))
        with open_results_file(path) as opened:
            assert opened.test_acc.values.tolist() == [0.25, 0.5]

    def test_ordinary_results_still_open(self, tmp_path):
        import xarray as xr

        from geomxai.study import open_results_file, save_results

        ds = xr.Dataset({"test_acc": ("regime", [0.5])}, coords={"regime": ["a"]})
        path = save_results(ds, tmp_path / "r.nc")
        with open_results_file(path) as opened:
            assert float(opened.test_acc[0]) == 0.5


def _forge_cache_entries(run: Path, raw: Path) -> list[Path]:
    """Make ``effective_rank`` of each of ``run``'s analysis cache entries HDF5 external storage
    reading ``raw`` (with h5py, as an attacker would)."""
    import h5py

    entries = sorted((run / "analysis").glob("*.nc"))
    for entry in entries:
        with h5py.File(entry, "r+") as fh:
            shape = fh["effective_rank"].shape
            del fh["effective_rank"]
            fh.create_dataset(
                "effective_rank", shape=shape, dtype="<f8", external=[(str(raw), 0, 8)]
            )
            fh["effective_rank"].dims[0].attach_scale(fh["layer"])
    return entries


class TestCacheEntriesThatReadOtherFiles:
    """Item 5: an analysis cache entry whose variable was HDF5 external storage made
    `geomxai analyze RUN` print and save another file's bytes. The entry is checked as a results
    file is; a refused one is a warning and is recomputed (and replaced)."""

    def test_analyze_recomputes_a_forged_entry(self, tmp_path, run, cli):
        import h5py
        import xarray as xr

        status, _ = cli("analyze", run, "--out", tmp_path / "first.nc", "--probe-size", 8)
        assert status == 0
        raw = tmp_path / "other.bin"
        raw.write_bytes(np.array([1234.5], dtype="<f8").tobytes())
        entries = _forge_cache_entries(run, raw)
        assert len(entries) == 2
        with xr.open_dataset(entries[0], engine="h5netcdf") as forged:  # the fault is real
            assert float(forged.effective_rank[0]) == 1234.5

        status, text = cli("analyze", run, "--out", tmp_path / "second.nc", "--probe-size", 8)
        assert status == 0
        for entry in entries:
            assert f"the analysis cache entry {entry} cannot be read" in text
        assert "would read other files" in text and "1234.5" not in text
        with (
            xr.open_dataset(tmp_path / "first.nc", engine="h5netcdf") as first,
            xr.open_dataset(tmp_path / "second.nc", engine="h5netcdf") as second,
        ):
            assert 1234.5 not in second.effective_rank.values
            np.testing.assert_array_equal(second.effective_rank, first.effective_rank)
        for entry in entries:  # replaced by a whole entry of this analysis
            with h5py.File(entry, "r") as fh:
                assert not fh["effective_rank"].external

    def test_analyze_run_recomputes_a_forged_entry(self, tmp_path, run):
        from geomxai.study import analyze_run

        analyze_run(run, probe_size=8, progress=False)
        raw = tmp_path / "other.bin"
        raw.write_bytes(np.array([1234.5], dtype="<f8").tobytes())
        _forge_cache_entries(run, raw)
        again = analyze_run(run, probe_size=8, progress=False)
        assert 1234.5 not in again.effective_rank.values


# -- inputs that are too big ---------------------------------------------------------------------
def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG file whose header claims ``width`` x ``height`` pixels (and holds none)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def bomb_folder(tmp_path) -> tuple[Path, Path]:
    from PIL import Image

    folder = tmp_path / "images"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), (40, 80, 120)).save(folder / cls / "ok.png")
    return folder, _png_header(folder / "a" / "bomb.png", 40000, 40000)


class TestInputsThatAreTooBig:
    """Item 10: a PNG claiming 40000x40000 gave PIL's DecompressionBombError traceback;
    `--config /dev/zero` was read without limit; `--data imagefolder:` read the current
    folder."""

    def test_a_decompression_bomb_names_the_file(self, bomb_folder):
        from geomxai.data import load_dataset

        folder, bomb = bomb_folder
        bundle = load_dataset(f"imagefolder:{folder}", image_size=8, test_fraction=0.34)
        samples = [*bundle.train.indices, *bundle.test.indices]
        full = bundle.train.dataset
        index = next(i for i in samples if full.samples[i][0] == str(bomb))
        with pytest.raises(ValueError, match="too large to read safely") as info:
            full[index]
        assert repr(str(bomb)) in str(info.value)
        ok = next(i for i in samples if i != index)
        assert tuple(full[ok][0].shape) == (3, 8, 8)

    def test_a_decompression_bomb_through_the_cli(self, tmp_path, bomb_folder, cli):
        folder, bomb = bomb_folder
        status, text = cli(
            "analyze", "--model", "cnn2", "--data", f"imagefolder:{folder}", "--no-labels",
            "--image-size", 8, "--out", tmp_path / "r.nc", "--probe-size", 8,
        )  # fmt: skip
        assert status == 2
        assert repr(str(bomb)) in one_error_line(text)

    @staticmethod
    def _truncated(folder: Path, how: str) -> Path:
        """A real PNG cut in half as a crashed writer leaves it, or a header that claims
        10000x10000 pixels (below the bomb limit) with no pixel data."""
        from PIL import Image

        path = folder / "a" / "cut.png"
        if how == "half-written":
            # Noise, so the compressed data is long enough to cut in the middle.
            pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        else:
            _png_header(path, 10000, 10000)
        return path

    # 10000x10000 is above PIL's warning limit, below its refusal: PIL warns, then decodes.
    @pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
    @pytest.mark.parametrize("how", ["half-written", "header only"])
    def test_a_truncated_image_names_the_file(self, bomb_folder, how):
        from geomxai.data import load_dataset

        folder, bomb = bomb_folder
        bomb.unlink()
        cut = self._truncated(folder, how)
        bundle = load_dataset(f"imagefolder:{folder}", image_size=8, test_fraction=0.34)
        full = bundle.train.dataset
        index = next(i for i, (p, _) in enumerate(full.samples) if p == str(cut))
        with pytest.raises(ValueError, match="not a readable image") as info:
            full[index]
        assert repr(str(cut)) in str(info.value) and "truncated" in str(info.value)

    @pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
    @pytest.mark.parametrize("how", ["half-written", "header only"])
    @pytest.mark.parametrize("command", ["analyze", "train"])
    def test_a_truncated_image_through_the_cli(self, tmp_path, bomb_folder, cli, how, command):
        folder, bomb = bomb_folder
        bomb.unlink()
        cut = self._truncated(folder, how)
        if command == "analyze":
            argv = ["analyze", "--model", "cnn2", "--data", f"imagefolder:{folder}"]
            argv += ["--no-labels", "--image-size", 8, "--out", tmp_path / "r.nc"]
            argv += ["--probe-size", 8]
        else:
            config = toml_config(tmp_path / "c.toml", tmp_path / "run")
            fields = [line for line in config.read_text().splitlines() if "_subset" not in line]
            fields = [line for line in fields if not line.startswith("dataset")]
            config.write_text("\n".join([*fields, f'dataset = "imagefolder:{folder}"', ""]))
            argv = ["train", "--config", config]
        status, text = cli(*argv)
        assert status == 2
        line = one_error_line(text)
        assert repr(str(cut)) in line and "truncated" in line

    def test_an_empty_imagefolder_path(self, tmp_path, cli, monkeypatch):
        from geomxai.data import load_dataset

        monkeypatch.chdir(tmp_path)  # the current folder is what an empty path used to read
        with pytest.raises(ValueError, match="imagefolder: needs the folder"):
            load_dataset("imagefolder:")
        status, text = cli(
            "analyze", "--model", "cnn2", "--data", "imagefolder:", "--out", tmp_path / "r.nc"
        )
        assert status == 2 and "imagefolder:PATH" in one_error_line(text)

    @pytest.mark.parametrize("what", ["/dev/zero", "folder", "2 MB file", "binary"])
    def test_config_files_that_are_not_configs(self, tmp_path, cli, what):
        path = {
            "/dev/zero": Path("/dev/zero"),
            "folder": tmp_path,
            "2 MB file": tmp_path / "big.toml",
            "binary": tmp_path / "bin.toml",
        }[what]
        if what == "2 MB file":
            path.write_text("# padding\n" * 200_000 + 'dataset = "digits"\n')
        if what == "binary":
            path.write_bytes(b"\xff\xfe\x00" * 10)
        status, text = cli("train", "--config", path)
        assert status == 2
        assert repr(str(path)) in one_error_line(text)


# -- API arguments -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    from geomxai.models import cnn2

    torch.manual_seed(0)
    return cnn2(in_channels=1, num_classes=10, image_size=8, width=4, feature_channels=2).eval()


_X = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))

SALIENCY_ARGS = {
    "baseline=nan": ({"method": "integrated_gradients", "baseline": math.nan}, "baseline"),
    "baseline=inf": ({"method": "integrated_gradients", "baseline": math.inf}, "baseline"),
    "baseline tensor with nan": (
        {"method": "integrated_gradients", "baseline": torch.full((1, 8, 8), math.nan)},
        "baseline",
    ),
    "noise_level=inf": ({"method": "smoothgrad", "noise_level": math.inf}, "noise_level"),
    "n_samples=True": ({"method": "smoothgrad", "n_samples": True}, "n_samples"),
    "batch_size=True": ({"batch_size": True}, "batch_size"),
    "seed=2**70": ({"method": "smoothgrad", "seed": 2**70}, "seed"),
    "target=-1": ({"target": -1}, "target"),
    "target=10": ({"target": 10}, "target"),
    "target=True": ({"target": True}, "target"),
    "target=np.True_": ({"target": np.True_}, "target"),
    "baseline=1e308": ({"method": "integrated_gradients", "baseline": 1e308}, "baseline"),
    "baseline tensor at 1e308": (
        {
            "method": "integrated_gradients",
            "baseline": torch.full((1, 8, 8), 1e308, dtype=torch.float64),
        },
        "baseline",
    ),
}


class TestAttributionArguments:
    """Item 11: non-finite and out-of-range arguments gave all-NaN maps, torch's index errors,
    overflows or a curve of zeros. Each is a ValueError naming the argument."""

    @pytest.mark.parametrize("case", list(SALIENCY_ARGS))
    def test_saliency(self, tiny_model, case):
        from geomxai.attribution import saliency

        kwargs, name = SALIENCY_ARGS[case]
        kwargs = {"target": 0, **kwargs}
        with pytest.raises(ValueError, match=name):
            saliency(tiny_model, _X, **kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"fill": "road", "road_noise": math.inf}, "road_noise"),
            ({"fill": "blur", "blur_sigma": math.inf}, "blur_sigma"),
            ({"fill": "blur", "blur_sigma": 1e300}, "blur_sigma must be at most 80"),
            ({"fill": "blur", "blur_sigma": 81}, "blur_sigma must be at most 80"),
            ({"y": True}, "y must be an integer"),
            ({"y": 99}, "y must hold class indices in \\[0, 10\\)"),
            ({"seed": 2**70}, "seed"),
            ({"batch_size": True}, "batch_size"),
        ],
    )
    def test_masking_curve(self, tiny_model, kwargs, name):
        from geomxai.attribution import masking_curve

        kwargs = {"y": 0, "fill": "zero", "fractions": [0, 0.5, 1], **kwargs}
        with pytest.raises(ValueError, match=name):
            masking_curve(tiny_model, _X, saliency=torch.rand(3, 8, 8), **kwargs)

    @pytest.mark.parametrize("mode", ["deletion", "insertion"])
    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"fill": "blur", "blur_sigma": 1e300}, "blur_sigma must be at most 80"),
            ({"fill": "blur", "blur_sigma": math.inf}, "blur_sigma"),
            ({"fill": "road", "road_noise": math.inf}, "road_noise"),
        ],
    )
    def test_deletion_and_insertion_curves(self, tiny_model, mode, kwargs, name):
        from geomxai.attribution import deletion_curve, insertion_curve

        curve = {"deletion": deletion_curve, "insertion": insertion_curve}[mode]
        with pytest.raises(ValueError, match=name):
            curve(tiny_model, _X, 0, torch.rand(3, 8, 8), fractions=[0, 0.5, 1], **kwargs)

    def test_gaussian_blur_bounds_its_sigma(self):
        from geomxai.attribution import gaussian_blur

        with pytest.raises(ValueError, match="sigma must be at most 80"):
            gaussian_blur(_X, 1e300)  # was OverflowError from a kernel of 6e300 taps
        assert gaussian_blur(_X, 80.0).shape == _X.shape

    def test_good_arguments_still_work(self, tiny_model):
        from geomxai.attribution import masking_curve, saliency

        maps = saliency(tiny_model, _X, 9, method="integrated_gradients", baseline=0.5)
        assert maps.shape == (3, 8, 8) and bool(torch.isfinite(maps).all())
        far = saliency(tiny_model, _X, 9, method="integrated_gradients", baseline=1e30)
        assert bool(torch.isfinite(far).all())  # far but within float32: still computed
        curve = masking_curve(
            tiny_model, _X, 0, maps, fractions=[0, 0.5, 1], fill="blur", blur_sigma=80.0
        )
        assert curve.sizes["fraction"] == 3


@pytest.fixture(scope="module")
def features():
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture(scope="module")
def whitening(features):
    from geomxai.whitening import GroupWhitening

    layer = GroupWhitening(8, group_size=4).double().train()
    layer(features[:32])
    return layer.eval()


class TestDecorrelationLossAtExtremeScales:
    """Item 11: decorrelation_loss(kind='covariance') returned NaN from features at 1e77 and
    kind='whitened' NaN at >= 1e160 (inf at 1e100). Neither is scale-free: each is computed on
    features rescaled by a power of two and scaled back, so a true value float64 holds is
    returned, and one beyond it is refused on the CPU with the scale and the fix, never NaN."""

    @pytest.mark.parametrize("scale", [1e50, 1e76, 1e77])
    def test_covariance_gives_its_true_value(self, features, scale):
        from geomxai.whitening import decorrelation_loss

        # DeCov grows with the 4th power of the scale; 2**k scales it exactly.
        ref = decorrelation_loss(features, group_size=4, kind="covariance").item()
        got = decorrelation_loss(features * scale, group_size=4, kind="covariance").item()
        assert math.isfinite(got)
        assert got == pytest.approx(ref * scale**2 * scale**2, rel=1e-9)
        power = decorrelation_loss(features * 2.0**250, group_size=4, kind="covariance")
        assert power.item() == ref * 2.0**1000

    def test_whitened_gives_its_true_value(self, features, whitening):
        from geomxai.whitening import decorrelation_loss

        # With the running whitening W fixed, the loss of s * h is mean((u A - I)^2) with
        # u = s**2 and A = W C W^T: a quadratic a u^2 - 2 b u + c. Three small scales (powers of
        # two, no overflow anywhere) give a, b, c; the loss at 1e50 must be that quadratic.
        def loss(scale):
            return decorrelation_loss(features * scale, kind="whitened", whitening=whitening)

        u = np.array([1.0, 4.0, 16.0])
        values = np.array([loss(s).item() for s in (1.0, 2.0, 4.0)])
        a, minus_2b, c = np.linalg.solve(np.vander(u, 3), values)
        assert a > 0
        want = a * 1e200 + minus_2b * 1e100 + c
        assert loss(1e50).item() == pytest.approx(want, rel=1e-9)
        assert loss(1e76).item() == pytest.approx(a * 1e304, rel=1e-9)

    @pytest.mark.parametrize("scale", [1e100, 1e160, 1e200, 1e300])
    @pytest.mark.parametrize("kind", ["covariance", "whitened"])
    def test_beyond_float64_is_refused_not_nan(self, features, whitening, kind, scale):
        from geomxai.whitening import decorrelation_loss

        with pytest.raises(ValueError, match=f"kind='{kind}'.*overflows float64.*offdiag"):
            decorrelation_loss(features * scale, kind=kind, whitening=whitening)

    def test_float32_features_that_overflow_float32_are_refused(self, features):
        from geomxai.whitening import decorrelation_loss

        with pytest.raises(ValueError, match="overflows float32"):
            decorrelation_loss((features * 1e12).float(), kind="covariance")

    def test_gradients_are_those_of_the_unscaled_loss(self, features):
        from geomxai.whitening import decorrelation_loss

        h = (features * 3.0).requires_grad_()
        decorrelation_loss(h, group_size=4, kind="covariance").backward()
        # The slow reference, straight from the definition: 0.5 * sum of squared off-diagonal
        # entries of each group's biased covariance.
        r = (features * 3.0).requires_grad_()
        total = 0.0
        for g in (r[:, :4], r[:, 4:]):
            c = g - g.mean(0)
            cov = c.T @ c / g.shape[0]
            total = total + 0.5 * (cov.square().sum() - cov.diagonal().square().sum())
        total.backward()
        torch.testing.assert_close(h.grad, r.grad)


class TestWhiteningWithBrokenStatistics:
    """Item 11: a GroupWhitening whose loaded running_cov held a NaN whitened everything to
    NaN in eval mode."""

    def test_loading_nan_statistics_is_refused(self):
        from geomxai.whitening import GroupWhitening

        layer = GroupWhitening(8, group_size=4)
        state = layer.state_dict()
        state["running_cov"] = state["running_cov"].clone()
        state["running_cov"][0, 1, 1] = math.nan
        with pytest.raises(ValueError, match="running_cov hold NaN or inf"):
            layer.load_state_dict(state)
        assert bool(torch.isfinite(layer.running_cov).all())  # left as it was

    # Statistics set by hand (not loaded) are not looked at in each eval forward: that look
    # would read the device at every step, which the captured step must never do (the host-read
    # tests of tests/train/test_train_graph.py). They are checked where they enter: on load.


# -- options and the command line ----------------------------------------------------------------
class TestOptionsAndCommandLine:
    """Item 12: options accepted then failing deep inside, or silently doing something else;
    command-line values that exited 0 or gave torch's messages."""

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"probe_size": math.nan},
            {"probe_size": 2.5},
            {"fractions": 2.5},
            {"n_examples": -1},
            {"entanglement": "no"},
            {"batch_size": True},
            {"seed": 2**70},
        ],
    )
    def test_analysis_options(self, kwargs):
        from geomxai.study import AnalysisOptions

        (name,) = kwargs
        with pytest.raises((TypeError, ValueError), match=name):
            AnalysisOptions(**kwargs)

    @pytest.mark.parametrize("workers", ["0", "-2"])
    def test_analyze_workers(self, tmp_path, run, cli, workers):
        status, text = cli("analyze", run, "--out", tmp_path / "r.nc", "--workers", workers)
        assert status == 2 and "--workers" in one_error_line(text)
        assert not (tmp_path / "r.nc").exists()

    @pytest.mark.parametrize("n", ["0", "-1"])
    def test_layers_num_classes(self, cli, n):
        status, text = cli("layers", "cnn2", "--num-classes", n, "--shapes")
        assert status == 2 and "--num-classes must be a positive integer" in one_error_line(text)

    def test_normalize_imagenet_on_grey_data(self, tmp_path, cli):
        status, text = cli(
            "analyze", "--model", "cnn2", "--data", "digits", "--normalize", "imagenet",
            "--out", tmp_path / "r.nc", "--probe-size", 8,
        )  # fmt: skip
        assert status == 2
        line = one_error_line(text)
        assert "3 channels" in line and "--normalize none" in line

    @pytest.mark.parametrize(
        ("override", "name"),
        [("seed=18446744073709551616", "seed"), ('out_dir="a\\u0000b"', "out_dir")],
    )
    def test_train_overrides(self, tmp_path, cli, override, name):
        config = toml_config(tmp_path / "c.toml", tmp_path / "run")
        status, text = cli("train", "--config", config, "--set", override)
        assert status == 2
        line = one_error_line(text)
        assert f"{name} must" in line
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize("key", ["runs", "out"])
    def test_a_design_path_with_a_nul_byte(self, tmp_path, cli, key):
        # "embedded null byte" named neither the key nor the file.
        from geomxai.pipeline import DesignError, load_design

        design = tmp_path / "d.toml"
        design.write_text(
            STUDY_DESIGN.replace('name = "s"\n', f'name = "s"\n{key} = "/x\\u0000y"\n')
        )
        with pytest.raises(DesignError) as info:
            load_design(design)
        assert str(design) in str(info.value)
        assert f"[study] {key} must be a path without NUL bytes" in str(info.value)
        for argv in (["--plan"], ["--stage", "train"]):
            status, text = cli("study", design, *argv)
            assert status == 2
            line = one_error_line(text)
            assert str(design) in line and f"[study] {key} must be a path" in line

    def test_a_path_argument_with_a_nul_byte(self, tmp_path):
        from geomxai.pipeline import open_study
        from geomxai.study import open_results_file

        design = tmp_path / "d.toml"
        design.write_text(STUDY_DESIGN)
        with pytest.raises(ValueError, match="runs_root \\(--runs\\) must be a path without NUL"):
            open_study(design, runs_root=str(tmp_path / "a\0b"))
        with pytest.raises(ValueError, match="must be a path without NUL bytes"):
            open_results_file(str(tmp_path / "a\0b.nc"))

"""The run lock never writes through a link (issue 24, item 1), shown with real symlinks and
hard links: the holder truncates and writes its lock file, so a lock that followed
``RUN/.geomxai.lock -> ~/victim`` overwrote the victim (any file, as root) and then removed
the link. Now the lock's name must hold a plain file of its own or nothing; anything else is
refused with one line naming it, and the link and what it points to are left as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_helpers import STUDY_DESIGN, one_error_line, toml_config

from geomxai.rundir import (
    LOCK_FILE,
    DirectoryLock,
    DirectoryLockedError,
    UnsafeLockError,
    read_metrics,
)
from geomxai.train import TrainConfig, train

pytestmark = pytest.mark.timeout(300)

SECRET = "the victim's own contents\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _assert_untouched(link: Path, victim: Path) -> None:
    assert victim.read_text() == SECRET
    assert link.is_symlink() and os.readlink(link) == str(victim)


class TestTheLockRefusesLinks:
    def test_a_symlink_to_a_file_is_refused_and_neither_is_touched(self, tmp_path, victim):
        folder = tmp_path / "run"
        folder.mkdir()
        link = folder / LOCK_FILE
        link.symlink_to(victim)
        with pytest.raises(UnsafeLockError) as info:
            DirectoryLock(folder, what="run directory").acquire()
        message = str(info.value)
        assert repr(str(link)) in message and "symbolic link" in message
        assert repr(str(victim)) in message and "\n" not in message
        assert info.value.filename == str(link)
        _assert_untouched(link, victim)

    def test_a_dangling_symlink_creates_nothing_at_its_target(self, tmp_path):
        folder = tmp_path / "run"
        folder.mkdir()
        target = tmp_path / "elsewhere" / "created-by-the-lock"
        target.parent.mkdir()
        (folder / LOCK_FILE).symlink_to(target)
        with pytest.raises(UnsafeLockError, match="symbolic link"):
            DirectoryLock(folder).acquire()
        assert not os.path.lexists(target)

    def test_a_symlink_to_a_folder_is_refused(self, tmp_path):
        folder, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
        folder.mkdir()
        elsewhere.mkdir()
        (folder / LOCK_FILE).symlink_to(elsewhere)
        with pytest.raises(UnsafeLockError, match="symbolic link"):
            DirectoryLock(folder).acquire()
        assert list(elsewhere.iterdir()) == []

    def test_a_hard_link_to_another_file_is_refused(self, tmp_path, victim):
        folder = tmp_path / "run"
        folder.mkdir()
        os.link(victim, folder / LOCK_FILE)
        with pytest.raises(UnsafeLockError, match="hard link"):
            DirectoryLock(folder).acquire()
        assert victim.read_text() == SECRET
        assert (folder / LOCK_FILE).read_text() == SECRET

    @pytest.mark.parametrize("kind", ["folder", "fifo"])
    def test_something_other_than_a_plain_file_is_refused(self, tmp_path, kind):
        folder = tmp_path / "run"
        folder.mkdir()
        if kind == "folder":
            (folder / LOCK_FILE).mkdir()
        else:
            os.mkfifo(folder / LOCK_FILE)
        with pytest.raises(UnsafeLockError, match="not a plain file"):
            DirectoryLock(folder).acquire()
        assert os.path.lexists(folder / LOCK_FILE)

    def test_a_link_put_in_place_while_held_is_not_removed_on_release(self, tmp_path, victim):
        # Release removes the lock file only while the name still is the file it holds.
        folder = tmp_path / "run"
        lock = DirectoryLock(folder).acquire()
        (folder / LOCK_FILE).unlink()
        (folder / LOCK_FILE).symlink_to(victim)
        lock.release()
        _assert_untouched(folder / LOCK_FILE, victim)

    def test_a_plain_leftover_lock_file_is_still_taken_over(self, tmp_path):
        # The leftover of a killed holder is a plain file: it is opened (not recreated) and
        # locked, as before.
        folder = tmp_path / "run"
        folder.mkdir()
        (folder / LOCK_FILE).write_text('{"pid": 1, "host": "x"}\n')
        with DirectoryLock(folder) as lock:
            assert lock.held and f'"pid": {os.getpid()}' in (folder / LOCK_FILE).read_text()
            with pytest.raises(DirectoryLockedError):
                DirectoryLock(folder).acquire()
        assert not os.path.lexists(folder / LOCK_FILE)


# -- through train and the command line ----------------------------------------------------------
class TestTrainResumeRefusesALinkedLock:
    """``ln -s ~/victim RUN/.geomxai.lock; geomxai train --config c.toml --set resume=true``."""

    def test_api(self, run, victim):
        link = run / LOCK_FILE
        link.symlink_to(victim)
        before = _snapshot(run)
        fields = {**json.loads((run / "config.json").read_text()), "out_dir": str(run)}
        config = TrainConfig.from_dict(fields).replace(epochs=2, resume=True)
        with pytest.raises(UnsafeLockError, match="symbolic link"):
            train(config)
        _assert_untouched(link, victim)
        assert _snapshot(run) == before  # no checkpoint, metric or config rewritten

    def test_command_line(self, tmp_path, run, victim):
        link = run / LOCK_FILE
        link.symlink_to(victim)
        before = _snapshot(run)
        config = toml_config(tmp_path / "c.toml", run, epochs=2)
        done = subprocess.run(
            [sys.executable, "-m", "geomxai.cli", "train", "--config", str(config)]
            + ["--set", "resume=true"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 2, done.stderr
        line = one_error_line(done.stderr)
        assert repr(str(link)) in line and "symbolic link" in line and "Remove it" in line
        _assert_untouched(link, victim)
        assert _snapshot(run) == before
        link.unlink()  # the fix the message names: then the resume goes on
        done = subprocess.run(
            [sys.executable, "-m", "geomxai.cli", "train", "--config", str(config)]
            + ["--set", "resume=true"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
        assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
        assert victim.read_text() == SECRET


# -- through a study -----------------------------------------------------------------------------


class TestAStudyRefusesALinkedLock:
    """The same through ``geomxai study``: each run's lock (``RUNS/NAME/RUN/.geomxai.lock``,
    taken by its training) and the claim a study process takes on a run."""

    @pytest.mark.parametrize("lock_name", [LOCK_FILE, ".geomxai.claim"])
    def test_command_line(self, tmp_path, victim, lock_name):
        design = tmp_path / "d.toml"
        design.write_text(STUDY_DESIGN)
        run_dir = tmp_path / "runs" / "s" / "regular-s0"
        run_dir.mkdir(parents=True)
        link = run_dir / lock_name
        link.symlink_to(victim)
        done = subprocess.run(
            [sys.executable, "-m", "geomxai.cli", "study", str(design), "--stage", "train"]
            + ["--runs", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports")],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 2, done.stderr
        line = one_error_line(done.stderr)
        assert repr(str(link)) in line and "symbolic link" in line
        _assert_untouched(link, victim)
        assert sorted(p.name for p in run_dir.iterdir()) == [lock_name]  # nothing trained

    def test_api(self, tmp_path, victim):
        from geomxai.pipeline import run_study

        design = tmp_path / "d.toml"
        design.write_text(STUDY_DESIGN)
        run_dir = tmp_path / "runs" / "s" / "regular-s0"
        run_dir.mkdir(parents=True)
        link = run_dir / LOCK_FILE
        link.symlink_to(victim)
        with pytest.raises(UnsafeLockError, match="symbolic link"):
            run_study(
                design,
                runs_root=tmp_path / "runs",
                reports_root=tmp_path / "reports",
                stages=["train"],
            )
        _assert_untouched(link, victim)

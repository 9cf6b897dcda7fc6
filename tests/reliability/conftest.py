"""Fixtures for the reliability tests: a tiny trained run, a read-only location that holds even
for root, a process that holds a lock, the pid of a process that has ended."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_helpers import TRAIN_FIELDS, ReadOnly

from geomxai.cli import main
from geomxai.train import TrainConfig, train


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished one-epoch run (checkpoints 0 and 1); tests copy it, never change it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    return train(TrainConfig(**{**TRAIN_FIELDS, "out_dir": str(out)}))


@pytest.fixture
def run(tmp_path, trained_run) -> Path:
    """A private copy of the trained run."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.fixture
def cli(caplog):
    """``cli(*argv) -> (status, log text)``: the geomxai command in this process."""

    def call(*argv):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            status = main([str(a) for a in argv])
        return status, caplog.text

    return call


@pytest.fixture
def read_only(monkeypatch) -> ReadOnly:
    return ReadOnly(monkeypatch)


# -- processes ---------------------------------------------------------------------------------
HOLD_LOCK = (
    "import sys, time\n"
    "from geomxai.rundir import DirectoryLock\n"
    "DirectoryLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def hold_lock():
    """``hold_lock(folder) -> Popen``: another process holding ``folder``'s lock."""
    children = []

    def start(folder):
        child = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(folder)],
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        assert child.stdout.readline().strip() == "locked"
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def checkpoint_writer_killed():
    """Leftover-file names a writer killed mid-write leaves, for a given pid."""
    from _internals import fs

    def names(target: str, pid: int) -> list[str]:
        return [f".{target}.{fs._host_tag()}-{pid}-k2j4x9q_.tmp", f".{target}.a1b2c3d4.tmp"]

    return names


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kib) -> folder``: a real tmpfs of ``kib`` KiB, unmounted afterwards (root
    only; skipped if the mount is refused, e.g. in an unprivileged container)."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in mounted:
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(folder)], check=False)

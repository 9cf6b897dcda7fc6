"""A real full disk never takes the process down (issue 24, item 2).

On a tmpfs filled to about 30 kB free, ``geomxai analyze RUN --out full/results.nc`` used to
die by SIGSEGV inside h5py after dozens of HDF5 tracebacks ("errno = 28"), and ``--cache
full/cache`` the same way instead of warning. Results and cache entries are now serialised in
memory and written with checked ``os.write`` calls: the free space is checked against the
size first, and a disk that fills during the write is an ordinary OSError. Every test here
mounts a real tmpfs (root only; skipped with the reason where the mount is refused).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _internals import FREE_MARGIN, write_bytes_atomic
from reliability_helpers import one_error_line

from geomxai.study import save_results

pytestmark = pytest.mark.timeout(300)


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system until about ``leave`` bytes are free (as ``dd`` would)."""
    with open(folder / "ballast", "wb") as fh:
        fh.write(b"\0" * max(shutil.disk_usage(folder).free - leave, 0))
    assert shutil.disk_usage(folder).free <= leave + 8192


def _results(n: int = 200) -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset({"test_acc": (("run", "epoch"), rng.random((n, n)))})


def _ours(folder: Path) -> list[str]:
    """What geomxai left in ``folder`` besides the ballast."""
    return sorted(p.name for p in folder.iterdir() if p.name != "ballast")


class TestSaveResultsOnAFullDisk:
    def test_refused_before_writing_and_the_old_file_survives(self, small_disk):
        disk = small_disk(1024)
        target = disk / "results.nc"
        save_results(_results(20), target)
        old = target.read_bytes()
        _fill(disk, 30 * 1024)
        with pytest.raises(OSError) as info:
            save_results(_results(), target)  # about 320 kB
        err = info.value
        assert err.errno == errno.ENOSPC and err.filename == str(target)
        assert "No space left on device (need about 0.3 MB" in str(err)
        assert target.read_bytes() == old
        assert _ours(disk) == ["results.nc"]  # no temporary file left

    def test_a_disk_that_fills_during_the_write(self, small_disk, monkeypatch):
        # The check passes (another writer fills the disk right after it): the write itself
        # meets the tmpfs's real ENOSPC, in os.write, not in HDF5.
        disk = small_disk(256)
        target = disk / "results.nc"
        save_results(_results(20), target)
        old = target.read_bytes()
        _fill(disk, 30 * 1024)
        monkeypatch.setattr(
            shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(2**40, 0, 2**40)
        )
        with pytest.raises(OSError, match=r"No space left on device \(need about") as info:
            save_results(_results(), target)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
        assert target.read_bytes() == old
        assert _ours(disk) == ["results.nc"]

    def test_write_bytes_atomic_leaves_the_margin(self, small_disk):
        disk = small_disk(256)
        _fill(disk, 100 * 1024)
        free = shutil.disk_usage(disk).free
        write_bytes_atomic(disk / "fits.bin", b"x" * (free - FREE_MARGIN - 8192))
        with pytest.raises(OSError, match="need about"):
            write_bytes_atomic(disk / "does-not.bin", b"x" * (free - FREE_MARGIN + 8192))
        assert _ours(disk) == ["fits.bin"]


def _analyze(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geomxai.cli", "analyze", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=280,
    )


class TestAnalyzeOnAFullDisk:
    """The command of the issue, in a child process: a crash would show as rc 139."""

    def test_out_on_a_full_disk_ends_in_one_line_and_keeps_the_old_results(
        self, small_disk, run, tmp_path
    ):
        disk = small_disk(512)
        target = disk / "results.nc"
        save_results(_results(20), target)
        old = target.read_bytes()
        _fill(disk, 30 * 1024)
        done = _analyze(run, "--out", target, "--no-cache")
        assert done.returncode == 2, done.stderr[-3000:]
        line = one_error_line(done.stderr)
        assert repr(str(target)) in line
        assert "no space left on device (need about" in line and "free space" in line
        assert "errno = 28" not in done.stderr and "HDF5" not in done.stderr
        assert target.read_bytes() == old
        assert _ours(disk) == ["results.nc"]

    def test_a_cache_on_a_full_disk_warns_and_the_analysis_goes_on(self, small_disk, run, tmp_path):
        disk = small_disk(256)
        _fill(disk, 30 * 1024)
        out = tmp_path / "elsewhere" / "results.nc"
        done = _analyze(run, "--out", out, "--cache", disk / "cache")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "cannot write the analysis cache entry" in done.stderr
        assert "No space left on device (need about" in done.stderr
        assert "Traceback" not in done.stderr
        with xr.open_dataset(out, engine="h5netcdf") as ds:
            assert ds.sizes["epoch"] == 2
        assert _ours(disk / "cache") == []  # no half-written entry, no temporary file

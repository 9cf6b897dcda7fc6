"""The CPU allocator tuning: it keeps freed memory mapped, and stays out of the user's choices."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

from geomxai import tune_cpu_allocator

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc"
)

# Eight 12 MiB buffers filled and freed ten times over; minor page faults per MiB filled.
_FAULTS = """
import resource, torch
from geomxai import tune_cpu_allocator
print(tune_cpu_allocator())
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    bufs = [torch.ones(3 << 20) for _ in range(8)]; del bufs
before = faults()
for _ in range(10):
    bufs = [torch.ones(3 << 20) for _ in range(8)]; del bufs
print((faults() - before) / (10 * 96))
"""


def _chosen_elsewhere(name: str) -> bool:
    """An environment variable that makes :func:`tune_cpu_allocator` stand aside (as its
    docstring lists them: the opt-out, a preload, glibc's ``MALLOC_*_`` tunables)."""
    return name in ("LD_PRELOAD", "GLIBC_TUNABLES", "GEOMXAI_MALLOC") or (
        name.startswith("MALLOC_") and name.endswith("_")
    )


def _faults_per_mib(**env: str) -> tuple[str, float]:
    # Without what other code set: dask.distributed puts MALLOC_TRIM_THRESHOLD_ into os.environ.
    clean = {k: v for k, v in os.environ.items() if not _chosen_elsewhere(k)}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return out[0], float(out[1])


@glibc_only
def test_tuned_allocator_stops_page_faults_on_reuse():
    tuned, faults = _faults_per_mib()
    # glibc's own thresholds adapt to the process's history, so the measure is shown to see
    # faults with a fixed 128 KiB mmap threshold, which maps and unmaps every buffer (and makes
    # tune_cpu_allocator stand aside).
    mapped, mapped_faults = _faults_per_mib(MALLOC_MMAP_THRESHOLD_="131072")
    assert (tuned, mapped) == ("True", "False")
    assert mapped_faults > 200  # 256 pages of 4 KiB per MiB
    assert faults < 26  # at most a tenth of that


@pytest.fixture
def fresh_state(monkeypatch):
    """A process that has not tuned yet, with none of the opt-out variables set."""
    tune_cpu_allocator.cache_clear()
    for name in list(os.environ):
        if _chosen_elsewhere(name):
            monkeypatch.delenv(name)
    yield monkeypatch
    tune_cpu_allocator.cache_clear()  # a faked answer must not outlive its test


@pytest.mark.parametrize(
    "name, value",
    [
        ("GEOMXAI_MALLOC", "default"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
        ("MALLOC_ARENA_MAX_", "2"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
    ],
)
def test_user_choice_leaves_allocator_alone(fresh_state, name, value):
    fresh_state.setenv(name, value)
    calls = []
    fresh_state.setattr(ctypes, "CDLL", lambda *a: calls.append(a))
    assert tune_cpu_allocator() is False
    assert calls == []


@glibc_only
def test_tunes_once_per_process(fresh_state):
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    fresh_state.setattr(ctypes, "CDLL", lambda *a: Libc())
    assert tune_cpu_allocator() is True
    assert tune_cpu_allocator() is True
    assert calls == [(-4, 0), (-1, 1 << 30)]


@glibc_only
def test_refused_setting_reports_false(fresh_state):
    class Libc:
        def mallopt(self, param, value):
            return 0

    fresh_state.setattr(ctypes, "CDLL", lambda *a: Libc())
    assert tune_cpu_allocator() is False


def test_the_command_tunes_before_it_works(monkeypatch, capsys):
    from geomxai import cli

    calls = []
    monkeypatch.setattr(cli, "tune_cpu_allocator", lambda: calls.append("tuned"))
    assert cli.main(["layers", "cnn2", "--input-shape", "1", "28", "28"]) == 0
    assert calls == ["tuned"]

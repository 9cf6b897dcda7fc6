"""Let glibc's malloc keep freed tensor memory, so CPU steps stop page-faulting it back in.

A training or attribution step on the CPU frees and re-allocates the same activation buffers
(megabytes each) every step. glibc serves large blocks with ``mmap`` and unmaps them on ``free``,
or trims them off the top of the heap, adapting its thresholds to what was freed before; where
they do not fit the pattern, every step the kernel hands out and zero-fills the same pages again.
In the step benchmark, which switches regime every few steps, that was more than half of a cnn2
step; blocks of 32 MiB and more (ResNet-18's activations at batch 128) are mapped anew on every
step even in a steady run (docs/training.md). PyTorch's CPU performance guide names the cure, an
allocator that keeps freed memory (jemalloc or tcmalloc by ``LD_PRELOAD``); ``mallopt`` gets the
same from glibc at run time, with nothing to install.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform

log = logging.getLogger(__name__)

OPT_OUT = "GEOMXAI_MALLOC"
"""Environment variable: ``GEOMXAI_MALLOC=default`` leaves the allocator as it is."""

# mallopt parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

TRIM_THRESHOLD = 1 << 30
"""Up to 1 GiB of freed memory at the top of the heap is kept instead of returned to the OS."""

# No block is served by its own mmap (so none is unmapped on free): a threshold alone would not
# do, since glibc caps it at 32 MiB and a ResNet-18 activation at batch 128 is 32 MiB already.
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def is_malloc_tunable(name: str) -> bool:
    """Whether ``name`` is one of glibc's ``MALLOC_*_`` environment variables."""
    return name.startswith("MALLOC_") and name.endswith("_")


def has_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _user_chose_allocator() -> str | None:
    """Why the allocator is not ours to tune, or None."""
    if os.environ.get(OPT_OUT, "").lower() == "default":
        return f"{OPT_OUT}=default"
    if os.environ.get("LD_PRELOAD"):
        return "an allocator may be preloaded (LD_PRELOAD is set)"
    glibc_tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(map(is_malloc_tunable, os.environ)) or "glibc.malloc" in glibc_tunables:
        return "glibc malloc tunables are set in the environment"
    if not has_glibc():
        return "not Linux with glibc"
    return None


@functools.cache
def tune_cpu_allocator() -> bool:
    """Make glibc keep freed memory for reuse; process-wide, once per process.

    Sets ``M_MMAP_MAX`` to 0 (every block comes from the heap, none from a mapping of its own)
    and ``M_TRIM_THRESHOLD`` to 1 GiB with ``mallopt``, the run-time form of the environment
    variables ``MALLOC_MMAP_MAX_`` and ``MALLOC_TRIM_THRESHOLD_``. The ``geomxai`` command calls
    it; call it yourself before CPU training in a notebook. It is not undone: freed memory stays
    with the process (up to 1 GiB of it at the top of the heap) instead of going back to the OS,
    so the peak use stays resident.

    Nothing is changed where the choice is someone else's or glibc is absent:
    ``GEOMXAI_MALLOC=default``, ``LD_PRELOAD`` set (jemalloc or tcmalloc, say), glibc malloc
    tunables in the environment (``MALLOC_*_``, ``GLIBC_TUNABLES``; dask.distributed's workers
    start with ``MALLOC_TRIM_THRESHOLD_=65536`` for its memory monitor), or not Linux with glibc.

    Returns
    -------
    bool
        True if the allocator is tuned (by this call or an earlier one), else False.
    """
    reason = _user_chose_allocator()
    if reason is None:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
        if mallopt is not None and all(mallopt(p, v) == 1 for p, v in _SETTINGS):
            log.debug("glibc malloc keeps freed memory for reuse (mmap off, trim at 1 GiB)")
            return True
        reason = "mallopt refused the settings"
    log.debug("CPU allocator left as it is: %s", reason)
    return False

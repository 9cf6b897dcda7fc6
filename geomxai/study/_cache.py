"""One checkpoint's measurement, cached: the key (the checkpoint's contents, the options, the
probe, the cache version), reading and writing an entry, and the cache folder of a run."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import xarray as xr

from geomxai._fs import (
    check_nonempty_path,
    check_writable,
    remove_stale_temps,
    write_bytes_atomic,
)
from geomxai.study._measure import measure
from geomxai.study._netcdf import netcdf_bytes, refuse_outside_reads
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe

log = logging.getLogger(__name__)


CACHE_VERSION = 7  # 4: NaN reasons on the variables, schema attrs, entanglement's layer
# 5: probe_size, n_units and probe_features (the run's similarity), probe minimums (issue 16)
# 6: the faithfulness_probability block (deletion and insertion curves), saliency_kwargs
# 7: live-unit counts, entanglement on live units, the invariant geometry, warnings (issue 23)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _probe_digest(probe: Probe) -> str:
    """A digest of the probe's contents, so a cache entry never answers for other images."""
    h = hashlib.sha256()
    for t in (probe.images, probe.labels, probe.masks):
        if t is not None:
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def _read_cache(cache: Path) -> xr.Dataset | None:
    """A cache entry, or None when there is none or it cannot be read (then it is recomputed
    and replaced: a cache is never the reason an analysis fails).

    An entry is checked as a results file is before xarray opens it: one that would read other
    files (HDF5 external storage, external links, virtual datasets) is refused, with a warning,
    and recomputed, so no other file's bytes reach the analysis's results.
    """
    if not cache.is_file():
        return None
    try:
        refuse_outside_reads(cache)
        with xr.open_dataset(cache, engine="h5netcdf") as cached:
            return cached.load()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        log.warning("the analysis cache entry %s cannot be read (%s); recomputing it", cache, err)
        return None


def _write_cache(cache: Path, ds: xr.Dataset) -> None:
    # A unique temporary name, renamed into place: parallel workers and concurrent
    # `geomxai analyze` processes may cache the same checkpoint at once, and each rename
    # leaves a whole entry (the same numbers, whichever lands last). Serialised in memory
    # first, so a full disk is a checked OSError here, never an HDF5 write that crashes.
    try:
        write_bytes_atomic(cache, netcdf_bytes(ds))
    except OSError as err:
        log.warning(
            "cannot write the analysis cache entry %s (%s); the result is used without being "
            "cached",
            cache,
            err,
        )


def analyze_checkpoint(
    path, probe: Probe, options: AnalysisOptions, *, cache_dir=None, device=None
) -> xr.Dataset:
    """:func:`measure` on one checkpoint file, cached under ``cache_dir`` by content and options.

    An entry that cannot be read is recomputed; one that cannot be written (a full disk, a
    read-only folder) is skipped with a warning. ``cache_dir=None``: no cache. ``device``: where
    the passes run (not part of the cache key: the numbers are the same up to rounding).
    """
    path = Path(path)
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(
            f"{_file_digest(path)}|{options.key()}|{_probe_digest(probe)}|v{CACHE_VERSION}".encode()
        ).hexdigest()[:24]
        cache = Path(cache_dir) / f"{path.stem}-{key}.nc"
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    # Through the package root, at call time: the checkpoint format (and the model specs it
    # rebuilds) belongs to geomxai.train, which `import geomxai.study` must not load.
    from geomxai import load_checkpoint

    model, config = load_checkpoint(path)
    # measure's own signature when no device is asked for (wrappers of it need not take one).
    extra = {} if device is None else {"device": device}
    ds = measure(model, probe, options, **extra)
    if cache is not None:
        _write_cache(cache, ds)
    return ds


def _cache_folder(run_dir: Path, cache) -> Path | None:
    """Where :func:`analyze_run` caches, after checking it can; stale temporary files of killed
    writers there are removed (only ``.<entry>.nc.<owner>.tmp`` names, never other files)."""
    if cache is None or cache is False:
        return None
    explicit = cache is not True
    if explicit and not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be True, False or a folder path; got {type(cache).__name__}")
    folder = check_nonempty_path(cache, "cache") if explicit else run_dir / "analysis"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder, folder=True)
    except OSError as err:
        if explicit:
            raise
        log.warning(
            "the run directory %s is not writable (%s); analysing without a cache. Keep one "
            "elsewhere with cache=DIR (geomxai analyze --cache DIR), or pass cache=False "
            "(--no-cache) to say so",
            run_dir,
            err.strerror or err,
        )
        return None
    remove_stale_temps(folder, lambda name: name.endswith(".nc"))
    return folder

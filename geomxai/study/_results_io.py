"""Results files: save (stamped, linked), open (refusing reads outside the file), squeeze.

Training a study's runs and writing its report is :mod:`geomxai.pipeline`'s job, above this
package: ``geomxai.study`` only reads run directories and writes results.
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from geomxai._fs import check_nonempty_path, write_bytes_atomic
from geomxai.study._link import link_geometry_fidelity
from geomxai.study._netcdf import netcdf_bytes, refuse_outside_reads
from geomxai.study._provenance import stamp


def linked(results: xr.Dataset, **attrs) -> xr.Dataset:
    """Results of several runs with their geometry <-> fidelity link, stamped.

    The link travels in the results file, so the report and any later reader see the same
    numbers; its variables have their own dims (geometry, fidelity). It covers trained
    checkpoints only: the untrained epoch-0 models would dominate the ranks.
    """
    link = link_geometry_fidelity(results, min_epoch=1)
    return stamp(results.merge(link, combine_attrs="override"), **attrs)


def save_results(ds: xr.Dataset, path) -> Path:
    """Write results to netCDF (h5netcdf) atomically: a temporary file renamed into place.

    A crash or a full disk leaves the previous file (if any) as it was, never a truncated one;
    temporary files that a killed writer of the same path left beside it are removed first.
    The file is serialised in memory first and written with checked ``os.write`` calls
    (:func:`geomxai._fs.write_bytes_atomic`): a disk without room for it is refused before
    anything is written, and no disk error reaches HDF5, which ends the process with SIGSEGV
    when its own writes meet a full disk.

    Raises
    ------
    ValueError
        ``path`` is empty or an existing folder.
    OSError
        The location cannot be written (read-only, no permission), naming ``path``; a full disk
        is ``ENOSPC`` "No space left on device (need about N MB, M MB free)" naming ``path``.
    """
    path = check_nonempty_path(path, "the results path")
    if path.is_dir():
        raise ValueError(
            f"the results path must be a file; {str(path)!r} is a folder (give a file path "
            f"such as {str(path / 'results.nc')!r})"
        )
    return write_bytes_atomic(path, netcdf_bytes(ds))


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_results_path(path: Path) -> None:
    if path.is_dir():
        inside = path / "results.nc"
        raise ValueError(
            f"{str(path)!r} is a folder, not a results file; give the results.nc that "
            "`geomxai analyze --out` or `geomxai study` wrote"
            + (f" (this folder holds {str(inside)!r})" if inside.is_file() else "")
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"no results file at {str(path)!r}; write one with `geomxai analyze` "
            "(or `geomxai study`)"
        )
    refuse_outside_reads(path)


def _unreadable(path: Path, err: Exception) -> ValueError:
    """Why a results file did not open, from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        what = "it is empty"
    elif head == _HDF5_SIGNATURE:
        what = "it is an HDF5/netCDF-4 file that is truncated or damaged (a write cut short?)"
    elif head[:3] == b"CDF":
        what = "it is a netCDF-3 file; geomxai results are netCDF-4 (HDF5) files"
    else:
        what = "it is not a netCDF-4 (HDF5) file"
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ValueError(
        f"{str(path)!r} is not a readable results file: {what} ({detail}). Write it again "
        "with `geomxai analyze` or `geomxai study`"
    )


def open_results(paths, *, parallel: bool = False) -> xr.Dataset:
    """Open one or many results files lazily (dask-backed ``open_mfdataset``).

    Raises
    ------
    FileNotFoundError
        A path holds no file (the message says how to write one).
    ValueError
        A path is a folder, or a file that is truncated or not a netCDF-4 results file, or an
        HDF5 file that would make the reader open other files (external links, external
        storage, virtual datasets: refused before xarray opens it); the message names it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [check_nonempty_path(p, "a results path") for p in paths]
    for path in paths:
        _check_results_path(path)
    try:
        return xr.open_mfdataset(
            [str(p) for p in paths], engine="h5netcdf", combine="by_coords", parallel=parallel
        )
    except (OSError, ValueError) as err:
        if isinstance(err, PermissionError):
            raise
        # Which file: open each on its own (only on this failure path).
        for path in paths:
            open_results_file(path).close()
        raise


def open_results_file(path) -> xr.Dataset:
    """One results file, opened lazily with ``xr.open_dataset`` (h5netcdf), with the errors of
    :func:`open_results`."""
    path = check_nonempty_path(path, "a results path")
    _check_results_path(path)
    try:
        return xr.open_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as err:
        if isinstance(err, PermissionError):
            raise
        raise _unreadable(path, err) from err


def squeeze_results(results: xr.Dataset) -> xr.Dataset:
    """A results Dataset without its size-1 ``regime``, ``seed``, ``epoch`` and ``layer`` dims.

    The accessor for one model's results (:func:`analyze_model`, or one checkpoint of one run):
    each dropped dim stays as a scalar coordinate (so the regime and layer names are kept), and
    ``float(squeeze_results(ds).effective_rank)`` is a number. Dims of size other than 1 are
    kept as they are. The report needs the ``regime`` dim: give it the results unsqueezed.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"effective_rank": (("regime", "seed", "epoch", "layer"), [[[[3.5]]]])},
    ...                 coords={"regime": ["resnet"], "layer": ["avgpool"]})
    >>> one = squeeze_results(ds)
    >>> float(one.effective_rank), str(one.layer.values)
    (3.5, 'avgpool')
    """
    if not isinstance(results, xr.Dataset):
        raise TypeError(f"results must be an xarray Dataset; got {type(results).__name__}")
    dims = [d for d in ("regime", "seed", "epoch", "layer") if results.sizes.get(d) == 1]
    return results.squeeze(dims)

"""netCDF files of results and analysis cache entries: the one serialiser (bytes in memory) and
the one check before opening one (nothing in it may make a reader open other files)."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr


def netcdf_bytes(ds: xr.Dataset) -> bytes:
    """``ds`` as the bytes of a netCDF file (h5netcdf), serialised in memory.

    Serialised in memory first, a full disk is a checked ``OSError`` of the write that follows,
    never an HDF5 write that crashes. Inside a dask.distributed worker, xarray guards a write with
    a cluster-wide lock named by the target; an in-memory target has no name the scheduler knows,
    so the write would fail ("Semaphore or Lock ... not known"). Nothing else writes these bytes,
    so the write runs on the synchronous scheduler, with a local lock.
    """
    import dask

    with dask.config.set(scheduler="synchronous"):
        return ds.to_netcdf(engine="h5netcdf")


def outside_reads(path: Path) -> list[str]:
    """What in the HDF5 file at ``path`` would make a reader open another file: external links,
    datasets kept in external raw files, virtual datasets (each mapping other files' data).

    The file is walked with h5py without following any link, before xarray opens it. h5py is
    asked whatever the first bytes are: HDF5 finds its superblock after a user block too (at
    byte 512, 1024, 2048, ...), so a look for the signature at byte 0 alone would let such a
    file through. ``[]`` for a file h5py cannot open (the open that follows says what is
    wrong with it).
    """
    import h5py

    found: list[str] = []
    try:
        fh = h5py.File(path, "r")
    except OSError:
        return found
    with fh:
        seen: set = set()
        groups = [("", fh)]
        while groups:
            prefix, group = groups.pop()
            for name in group:
                where = f"{prefix}/{name}"
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    found.append(f"{where!r} is an external link to {link.filename!r}")
                    continue
                if isinstance(link, h5py.SoftLink):
                    continue  # a name for an object of this file, walked where it lives
                obj = group[name]
                if obj.id in seen:
                    continue
                seen.add(obj.id)
                if isinstance(obj, h5py.Group):
                    groups.append((where, obj))
                elif isinstance(obj, h5py.Dataset):
                    if obj.external:
                        files = sorted({os.fsdecode(f[0]) for f in obj.external})
                        found.append(f"{where!r} is HDF5 external storage in {files}")
                    if obj.is_virtual:
                        files = sorted({m.file_name for m in obj.virtual_sources()})
                        found.append(f"{where!r} is a virtual dataset reading {files}")
    return found


def refuse_outside_reads(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` if opening it would read other files.

    The one check before any netCDF file geomxai wrote is opened again: results files and
    analysis cache entries alike keep all their data inside the file.
    """
    found = outside_reads(path)
    if found:
        raise ValueError(
            f"refused to open {str(path)!r}: it would read other files ("
            + "; ".join(found[:3])
            + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
            + "). geomxai results keep all their data inside the file, so this one was made "
            "or edited by other code; write it again with `geomxai analyze` or `geomxai study`"
        )

"""netCDF bytes in memory: the one serialiser of results files and analysis cache entries."""

from __future__ import annotations

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

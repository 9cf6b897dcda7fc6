"""Analyse many checkpoints in parallel through dask.distributed."""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import contextmanager
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def _host(address: str) -> str:
    return urlparse(address).hostname or address


def _analyse_one(path, probe, options, cache_dir, workers_per_host):
    import torch
    from dask.distributed import get_worker

    from geomxai.study._cache import analyze_checkpoint

    # Each worker process gets its share of its machine's cores; torch would otherwise start as
    # many threads as the machine has in every worker and oversubscribe it.
    sharing = workers_per_host.get(_host(get_worker().address), 1)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // sharing))
    return analyze_checkpoint(path, probe, options, cache_dir=cache_dir)


@contextmanager
def local_cluster(workers: int):
    """A ``LocalCluster`` of ``workers`` single-threaded processes; yields its address."""
    from dask.distributed import LocalCluster

    # ":0": any free port. The default (8787) warns and moves when another cluster holds it.
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def map_checkpoints(
    paths, probe, options, cache_dir, *, workers: int = 2, scheduler: str | None = None
):
    """:func:`~geomxai.study.analyze_checkpoint` on every path, one dask task each.

    With ``scheduler`` (an address such as ``tcp://host:8786``) the tasks go to that cluster;
    otherwise a ``LocalCluster`` of ``workers`` single-threaded processes is started and closed.
    Each task's torch uses its machine's cores divided by the workers on that machine.
    Results come back in the order of ``paths``.
    """
    if not scheduler:
        with local_cluster(workers) as address:
            return map_checkpoints(paths, probe, options, cache_dir, scheduler=address)

    from dask.distributed import Client

    cache = None if cache_dir is None else str(cache_dir)  # str(None) would be a folder "None"
    with Client(scheduler) as client:
        per_host = dict(Counter(_host(a) for a in client.scheduler_info()["workers"]))
        probe_future = client.scatter(probe, broadcast=True)
        futures = [
            client.submit(_analyse_one, str(p), probe_future, options, cache, per_host, pure=False)
            for p in paths
        ]
        return client.gather(futures)

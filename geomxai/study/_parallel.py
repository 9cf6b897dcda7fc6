"""Analyse many checkpoints in parallel through dask.distributed."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _analyse_one(path, probe, options, cache_dir, threads):
    import torch

    from geomxai.study._analyze import analyze_checkpoint

    # Each worker process gets its share of the cores; torch would otherwise start as many
    # threads as the machine has in every worker and oversubscribe it.
    torch.set_num_threads(threads)
    return analyze_checkpoint(path, probe, options, cache_dir=cache_dir)


def map_checkpoints(
    paths, probe, options, cache_dir, *, workers: int = 2, scheduler: str | None = None
):
    """:func:`~geomxai.study._analyze.analyze_checkpoint` on every path, one dask task each.

    With ``scheduler`` (an address such as ``tcp://host:8786``) the tasks go to that cluster;
    otherwise a ``LocalCluster`` of ``workers`` single-threaded processes is started and closed.
    Results come back in the order of ``paths``.
    """
    import os

    from dask.distributed import Client, LocalCluster

    if scheduler:
        client, cluster = Client(scheduler), None
        threads = 1
    else:
        # ":0": any free port. The default (8787) warns and moves when another cluster holds it.
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        client = Client(cluster)
        threads = max(1, (os.cpu_count() or 1) // workers)
    cache = None if cache_dir is None else str(cache_dir)  # str(None) would be a folder "None"
    try:
        probe_future = client.scatter(probe, broadcast=True)
        futures = [
            client.submit(_analyse_one, str(p), probe_future, options, cache, threads, pure=False)
            for p in paths
        ]
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

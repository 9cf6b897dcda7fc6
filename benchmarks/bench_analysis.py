"""Study analysis on the CPU: one checkpoint, then a run of 8 checkpoints serially and through dask.

A tiny ``regular`` run of the paper's 2-layer CNN (``cnn2``) is trained with the public API
(``geomxai.train.train``) into a temporary directory: Fashion-MNIST (digits where it is not
installed, as ``geomxai study`` falls back), a 2,000-image training subset, 7 epochs, so the run
holds 8 checkpoints (epoch 0 is the initial model). Then, all on the CPU:

1. One checkpoint. ``geomxai.study.analyze_checkpoint`` on the last checkpoint with a
   2,000-image probe (``make_probe``: the first 2,000 test images) and every metric of the
   default ``AnalysisOptions`` (geometry of the feature layer, probe accuracy, saliency, MoRF /
   LeRF / random masking curves at 11 fractions, top-q contrast, Gini, gradient entanglement),
   ``cache_dir=None``. The median over ``--repeats`` calls, after a warm-up on 64 images (lazy
   imports, allocator).
2. Eight checkpoints. ``geomxai.study.analyze_run`` over the whole run, four ways, in the same
   process and the same run, so every ratio is against a baseline measured next to it:

   - ``serial``: ``workers=1`` (analyze_run's serial path, in this process, with torch's default
     thread count or ``--threads``; on a machine shared with another CPU job, 2 threads on 2
     cores can be slower than 1, so the count is recorded);
   - ``dask_1_worker`` and ``dask_2_workers``: ``scheduler=`` the address of a ``LocalCluster``
     of 1 or 2 single-threaded worker processes started here before the timing (its start-up is
     reported apart; the workers have already imported torch and geomxai). ``analyze_run``
     gives each task one torch thread on a scheduler it is handed, so this pair measures how
     the dask path scales from 1 to 2 workers at a fixed thread count;
   - ``workers_2``: ``workers=2``, what ``geomxai analyze --workers 2`` does: analyze_run starts
     and closes its own ``LocalCluster`` (2 processes, ``cpu_count // 2`` torch threads each),
     start-up and worker imports included.

   ``analyze_run`` always caches per-checkpoint results under ``run_dir/analysis/`` and has no
   switch to turn that off, so the folder is deleted before every timed call: nothing is read
   from the cache, and writing it (8 small netCDF files) is part of every timing alike. With
   ``--repeats-run`` above 1 (default 1: a repeat of the four ways takes minutes) the ways rotate
   their order each repeat, so a slow spell of a shared machine hits all of them alike.

Reported: seconds per checkpoint, the speed-up from 1 to 2 dask workers
(``dask_1_worker / dask_2_workers``; at most 2 on two free cores), and the speed-up of each way
over ``serial``. As a correctness check the results of every dask way must equal the serial ones
(``xr.testing.assert_allclose``); the script exits 1 if they do not. Writes
``benchmarks/results/bench_analysis.json`` with the hardware, versions and load average.

    python benchmarks/bench_analysis.py            # the measurement: results/bench_analysis.json
    python benchmarks/bench_analysis.py --quick    # smoke run (200 probe images, 4 checkpoints),
                                                   # written to the temp dir, not results/

Timings on a machine that is busy with other work are not meaningful; run on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask
import distributed
import torch
import xarray as xr
from _machine import hardware_name  # benchmarks/_machine.py, beside this script

from geomxai.data import DatasetNotFoundError, load_dataset
from geomxai.study import (
    AnalysisOptions,
    analyze_checkpoint,
    analyze_run,
    checkpoints_of,
    make_probe,
)
from geomxai.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results" / "bench_analysis.json"
DATASET, FALLBACK = "fashion-mnist", "digits"
WAYS = ("serial", "dask_1_worker", "dask_2_workers", "workers_2")
FULL = {"probe": 2000, "epochs": 7, "train_subset": 2000, "repeats_one": 3, "repeats_run": 1}
QUICK = {"probe": 200, "epochs": 3, "train_subset": 500, "repeats_one": 1, "repeats_run": 1}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not on every platform
        return None


def train_run(root: Path, *, epochs: int, train_subset: int) -> tuple[Path, str, float]:
    """A tiny regular cnn2 run; falls back to digits like ``geomxai study`` does."""
    config = TrainConfig(
        regime="regular",
        dataset=DATASET,
        model="cnn2",
        epochs=epochs,
        train_subset=train_subset,
        test_subset=2000,
        device="cpu",
        seed=0,
        out_dir=str(root / "run"),
        progress=False,
    )
    try:
        load_dataset(config.dataset)
    except DatasetNotFoundError as err:
        print(f"{DATASET} is not installed ({err}); training on {FALLBACK!r} instead")
        config = config.replace(dataset=FALLBACK, train_subset=None, test_subset=None)
    start = time.perf_counter()
    run_dir = train(config)
    return run_dir, config.dataset, time.perf_counter() - start


def _warm_worker() -> int:
    # The imports a task pays on a fresh worker, paid here before the timing starts.
    import geomxai.attribution  # noqa: F401
    import geomxai.collect  # noqa: F401
    import geomxai.dynamics  # noqa: F401
    import geomxai.geometry  # noqa: F401
    import geomxai.study  # noqa: F401

    return os.getpid()


def start_cluster(n_workers: int) -> tuple[distributed.LocalCluster, distributed.Client, float]:
    start = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(n_workers)
    client.run(_warm_worker)
    return cluster, client, time.perf_counter() - start


def max_abs_difference(a: xr.Dataset, b: xr.Dataset) -> float:
    worst = 0.0
    for name, da in a.data_vars.items():
        if da.dtype.kind not in "fiu":
            continue
        diff = abs(da.astype(float) - b[name].astype(float))
        value = float(diff.max(skipna=True)) if diff.size else 0.0
        if math.isfinite(value):
            worst = max(worst, value)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small probe, 4 ckpts")
    parser.add_argument("--probe", type=int, help="probe images (default 2000; quick 200)")
    parser.add_argument("--epochs", type=int, help="epochs, i.e. checkpoints - 1 (default 7)")
    parser.add_argument("--repeats-one", type=int, help="repeats of the one-checkpoint timing")
    parser.add_argument("--repeats-run", type=int, help="repeats of each way over the run")
    parser.add_argument("--out", type=Path, help="JSON path (default results/bench_analysis.json)")
    parser.add_argument(
        "--threads", type=int, help="torch threads of this process (one checkpoint, serial)"
    )
    args = parser.parse_args(argv)
    setting = {**(QUICK if args.quick else FULL)}
    for key in ("probe", "epochs", "repeats_one", "repeats_run"):
        if getattr(args, key) is not None:
            setting[key] = getattr(args, key)
    if args.out is not None:
        out = args.out
    elif args.quick:  # a smoke run never overwrites the measured figures
        out = Path(tempfile.gettempdir()) / "bench_analysis_quick.json"
    else:
        out = RESULTS
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # The scheduler's INFO lines (workers joining and leaving) would bury the table.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="bench_analysis_") as tmp:
        run_dir, dataset, train_s = train_run(
            Path(tmp), epochs=setting["epochs"], train_subset=setting["train_subset"]
        )
        paths = checkpoints_of(run_dir)
        probe = make_probe(dataset, setting["probe"])
        n_probe = len(probe.labels)
        options = AnalysisOptions(probe_size=n_probe)
        print(
            f"trained cnn2 on {dataset} ({setting['epochs']} epochs, {len(paths)} checkpoints) "
            f"in {train_s:.1f} s; probe: {n_probe} test images; torch threads "
            f"{torch.get_num_threads()}, {os.cpu_count()} cores, load average {load_before}"
        )

        # ---- 1. one checkpoint, no cache
        last = paths[-1]
        small = make_probe(dataset, 64)
        analyze_checkpoint(last, small, AnalysisOptions(probe_size=len(small.labels)))
        one = []
        for _ in range(setting["repeats_one"]):
            start = time.perf_counter()
            analyze_checkpoint(last, probe, options, cache_dir=None)
            one.append(time.perf_counter() - start)
        one_s = statistics.median(one)
        print(f"one checkpoint ({last.name}), {n_probe} probe images: {one_s:.2f} s")

        # ---- 2. the run, four ways
        clusters = {}
        startup = {}
        try:
            for key, n in (("dask_1_worker", 1), ("dask_2_workers", 2)):
                cluster, client, seconds = start_cluster(n)
                clusters[key] = (cluster, client)
                startup[key] = seconds

            def analyse(way: str) -> xr.Dataset:
                kwargs = {"options": options, "probe": probe, "progress": False}
                if way == "serial":
                    return analyze_run(run_dir, workers=1, **kwargs)
                if way == "workers_2":
                    return analyze_run(run_dir, workers=2, **kwargs)
                return analyze_run(run_dir, scheduler=clusters[way][0].scheduler_address, **kwargs)

            seconds = {way: [] for way in WAYS}
            results = {}
            for r in range(setting["repeats_run"]):
                for way in WAYS[r % len(WAYS) :] + WAYS[: r % len(WAYS)]:
                    shutil.rmtree(run_dir / "analysis", ignore_errors=True)
                    start = time.perf_counter()
                    results[way] = analyse(way)
                    seconds[way].append(time.perf_counter() - start)
                    print(f"  repeat {r + 1}, {way}: {seconds[way][-1]:.2f} s")
        finally:
            for cluster, client in clusters.values():
                client.close()
                cluster.close()

    # ---- correctness: dask and serial give the same numbers
    check = {}
    for way in WAYS[1:]:
        diff = max_abs_difference(results["serial"], results[way])
        try:
            xr.testing.assert_allclose(results["serial"], results[way])
            equal = True
        except AssertionError as err:
            equal = False
            print(f"FAIL: {way} differs from serial:\n{err}", file=sys.stderr)
        check[way] = {"allclose_to_serial": equal, "max_abs_diff": diff}

    median = {way: statistics.median(s) for way, s in seconds.items()}
    n_ckpt = len(paths)
    ratios = {
        "speedup_dask_1_to_2_workers": median["dask_1_worker"] / median["dask_2_workers"],
        "speedup_over_serial": {way: median["serial"] / median[way] for way in WAYS},
    }
    load_after = load_average()
    print()
    print(
        f"analyze_run over {n_ckpt} checkpoints, {n_probe} probe images "
        f"(median of {setting['repeats_run']})"
    )
    print(f"{'way':<16}{'seconds':>10}{'s / ckpt':>10}{'vs serial':>11}  equal to serial")
    for way in WAYS:
        same = "-" if way == "serial" else ("yes" if check[way]["allclose_to_serial"] else "NO")
        print(
            f"{way:<16}{median[way]:>10.2f}{median[way] / n_ckpt:>10.2f}"
            f"{ratios['speedup_over_serial'][way]:>10.2f}x  {same}"
        )
    print(
        f"speed-up from 1 to 2 dask workers: {ratios['speedup_dask_1_to_2_workers']:.2f}x "
        f"(cluster start-up, not timed above: 1 worker {startup['dask_1_worker']:.1f} s, "
        f"2 workers {startup['dask_2_workers']:.1f} s)"
    )
    print(f"load average before {load_before}, after {load_after}")

    result = {
        "benchmark": "analysis",
        "meta": {
            "device": "cpu",
            "hardware": hardware_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "xarray": xr.__version__,
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "quick": args.quick,
            "dataset": dataset,
            "model": "cnn2",
            "regime": "regular",
            "epochs": setting["epochs"],
            "train_subset": setting["train_subset"] if dataset == DATASET else None,
            "train_seconds": train_s,
            "probe_images": n_probe,
            "analysis_options": json.loads(options.key()),
            "timing": "median over repeats; run ways rotate their order each repeat; "
            "run_dir/analysis deleted before every analyze_run call",
        },
        "one_checkpoint": {
            "checkpoint": last.name,
            "repeats": setting["repeats_one"],
            "seconds": one,
            "median_s": one_s,
            "probe_images_per_s": n_probe / one_s,
        },
        "run": {
            "checkpoints": n_ckpt,
            "repeats": setting["repeats_run"],
            "ways": {
                "serial": "analyze_run(workers=1): in this process",
                "dask_1_worker": "analyze_run(scheduler=LocalCluster(1 worker, 1 thread))",
                "dask_2_workers": "analyze_run(scheduler=LocalCluster(2 workers, 1 thread each))",
                "workers_2": "analyze_run(workers=2): its own LocalCluster, start-up included",
            },
            "seconds": seconds,
            "median_s": median,
            "seconds_per_checkpoint": {way: median[way] / n_ckpt for way in WAYS},
            "cluster_startup_s": startup,
            **ratios,
        },
        "check": check,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"wrote {out}")
    return 0 if all(c["allclose_to_serial"] for c in check.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

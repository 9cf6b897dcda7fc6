"""The stages of a study: train, analyse, statistics, report; each resumable, each skipping
what is done.

``train`` trains every planned run that has no per-run result yet (resuming a cut-off one);
``analyse`` writes the small per-run result of every finished run that has none; ``runs`` does
the two run by run, so results appear while a long study trains and several processes can share
the plan (each run is claimed with the package's one lock, so no run is done twice and a killed
process leaves no stale claim); ``statistics`` reads every per-run result once and writes
``results.nc`` atomically; ``report`` renders ``index.html`` and ``tables.md`` from
``results.nc`` alone, recomputing it first where it was computed from another set of runs.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from geomxai._lock import DirectoryLock, DirectoryLockedError
from geomxai.pipeline._design import Cell, Design, spread_epochs
from geomxai.pipeline._statistics import (
    analysed_runs,
    detail_results,
    image_count,
    load_per_run,
    runs_in,
    study_statistics,
    wall_time,
)
from geomxai.rundir import run_name

log = logging.getLogger(__name__)

STAGES = ("train", "analyse", "runs", "statistics", "report")
"""Every stage, in the order ``all`` runs them (``runs`` stands for ``train`` + ``analyse``)."""

ALL = ("train", "analyse", "statistics", "report")
"""The stages ``geomxai study DESIGN`` runs when none is named."""

CLAIM_FILE = ".geomxai.claim"
"""A run's claim inside its run directory: the package's folder lock on another file name than
the trainer's own lock, so a claimed run can still be trained by its claimer."""


def _command() -> str:
    return " ".join(shlex.quote(a) for a in sys.argv)


def _result_path(design: Design, name: str) -> Path:
    return design.out_dir / "runs" / f"{name}.nc"


def _dataset_note(design: Design) -> tuple[dict, str | None]:
    """The training fields to use (a fallback dataset where the design allows one)."""
    from geomxai.data import DatasetNotFoundError, load_dataset

    train = dict(design.train)
    dataset = train.get("dataset", "fashion-mnist")
    try:
        load_dataset(dataset)
    except DatasetNotFoundError as err:
        if not design.fallback_dataset:
            raise DatasetNotFoundError(
                f"{err} (design {design.source} sets no [study] fallback_dataset, so the study "
                "stops rather than run on other data)"
            ) from err
        log.warning("%s is not available; falling back to %s", dataset, design.fallback_dataset)
        note = f"{dataset} is not installed here; this study ran on {design.fallback_dataset!r} instead. ({err})"
        train.update(dataset=design.fallback_dataset, train_subset=None, test_subset=None)
        return train, note
    return train, None


def _config(design: Design, train: dict, cell: Cell, seed: int):
    from geomxai.train import TrainConfig

    out = design.runs_dir / run_name(cell, seed)
    values = {**train, **cell.overrides, "seed": int(seed), "progress": False}
    values.update(out_dir=str(out), resume=(out / "checkpoints").is_dir())
    return TrainConfig.from_dict(values)


def train_run(design: Design, train: dict, cell: Cell, seed: int, tag: str = "") -> Path | None:
    """Train one planned run unless its per-run result exists; resume a cut-off run."""
    from geomxai.train import train as train_model

    name = run_name(cell, seed)
    if _result_path(design, name).is_file():
        log.info("%s %s: analysed already, not retrained", tag, name)
        return None
    config = _config(design, train, cell, seed)
    start = time.perf_counter()
    log.info("%s training %s", tag, name)
    out = train_model(config)
    log.info("%s %s done in %.0f s", tag, name, time.perf_counter() - start)
    return out


def analyse_run(design: Design, probe, options, cell: Cell, seed: int) -> Path | None:
    """Write one finished run's per-run result, unless it exists or the run is not finished."""
    from geomxai._fs import write_text_atomic
    from geomxai.rundir import read_run
    from geomxai.study import run_result, save_results, stamp

    name = run_name(cell, seed)
    target = _result_path(design, name)
    if target.is_file():
        return None
    try:
        run = read_run(design.runs_dir / name)
    except (FileNotFoundError, ValueError):
        return None  # not trained yet
    epochs_planned = int(design.config(cell, seed).epochs)
    if max(run.checkpoints, default=-1) < epochs_planned:
        log.info(
            "%s: %d of %d epochs trained; analysed later",
            name,
            max(run.checkpoints, default=0),
            epochs_planned,
        )
        return None
    epochs = {
        "all": None,
        "final": [max(run.checkpoints)],
        "spread": spread_epochs(sorted(run.checkpoints)),
    }[design.checkpoints]
    # Sub-epoch checkpoints (checkpoint_every_steps) are where most axis movement happens:
    # "spread" keeps every one of them beside its spread of epochs.
    steps = None
    if design.checkpoints == "spread":
        from geomxai.rundir import list_step_checkpoints

        steps = sorted(list_step_checkpoints(design.runs_dir / name)) or None
    start = time.perf_counter()
    ds = run_result(
        design.runs_dir / name,
        probe=probe,
        options=options,
        epochs=epochs,
        steps=steps,
        keep=design.keep,
        control=design.control,
    )
    ds.attrs.update(
        {
            "cell": cell.name,
            "design": design.name,
            "analysis_seconds": round(time.perf_counter() - start, 1),
            "train_images": image_count(run.config, "train"),
            "test_images": image_count(run.config, "test"),
        }
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    if design.keep_checkpoint:
        # The final checkpoint beside the result (cnn2's is tens of kB), so a later change of
        # the measurements re-analyses without re-training.
        from geomxai._fs import write_bytes_atomic

        final = run.checkpoints[max(run.checkpoints)]
        write_bytes_atomic(target.with_name(f"{name}.final.pt"), final.read_bytes())
    # The metrics first: a result file is what marks a run done, so it is written last.
    write_text_atomic(
        target.with_name(f"{name}.metrics.jsonl"),
        "".join(json.dumps(m, sort_keys=True) + "\n" for m in run.metrics.values()),
    )
    save_results(stamp(ds, command=_command()), target)
    log.info("analysed %s in %.0f s -> %s", name, time.perf_counter() - start, target)
    return target


def _probe_and_options(design: Design, train: dict):
    from geomxai.study import AnalysisOptions, make_probe

    options = AnalysisOptions(**design.analysis)
    return make_probe(train.get("dataset", "fashion-mnist"), options.probe_size), options


def run_status(design: Design, seeds: Sequence[int] | None = None) -> list[dict]:
    """Where each planned run stands, without training, analysing or locking anything.

    Returns one dict per (cell, seed) of :meth:`Design.plan`: ``run`` (its name), ``cell``,
    ``seed``, ``epochs`` (planned), ``trained`` (the last epoch checkpointed, 0 when none) and
    ``status``: "analysed" (its per-run result exists), "trained" (every epoch checkpointed, not
    analysed), "in progress" (some epochs), or "to do".
    """
    from geomxai.rundir import read_run

    rows = []
    for cell, seed in design.plan(seeds):
        name = run_name(cell, seed)
        planned = int(design.config(cell, seed).epochs)
        try:
            trained = max(read_run(design.runs_dir / name).checkpoints, default=0)
        except (FileNotFoundError, ValueError):
            trained = 0
        if _result_path(design, name).is_file():
            status = "analysed"
        elif trained >= planned:
            status = "trained"
        else:
            status = "in progress" if trained else "to do"
        rows.append(
            {
                "run": name,
                "cell": cell.name,
                "seed": int(seed),
                "epochs": planned,
                "trained": int(trained),
                "status": status,
            }
        )
    return rows


def stage_train(design: Design, seeds: Sequence[int] | None = None) -> None:
    train, _ = _dataset_note(design)
    plan = design.plan(seeds)
    for i, (cell, seed) in enumerate(plan, 1):
        _claimed(design, cell, seed, _train_one, train, f"[{i}/{len(plan)}]")


def stage_analyse(design: Design, seeds: Sequence[int] | None = None) -> None:
    train, _ = _dataset_note(design)
    probe, options = _probe_and_options(design, train)
    for cell, seed in design.plan(seeds):
        _claimed(design, cell, seed, _analyse_one, probe, options)


def stage_runs(design: Design, seeds: Sequence[int] | None = None) -> None:
    """Train and analyse each planned run in turn (several processes may share the plan: on 2
    cores, two processes of one thread each train cnn2 about 1.3x faster than one of two)."""
    train, _ = _dataset_note(design)
    probe, options = _probe_and_options(design, train)
    plan = design.plan(seeds)
    for i, (cell, seed) in enumerate(plan, 1):
        _claimed(design, cell, seed, _both, train, f"[{i}/{len(plan)}]", probe, options)


def _train_one(design, cell, seed, train, tag):
    train_run(design, train, cell, seed, tag)


def _analyse_one(design, cell, seed, probe, options):
    analyse_run(design, probe, options, cell, seed)


def _both(design, cell, seed, train, tag, probe, options):
    train_run(design, train, cell, seed, tag)
    analyse_run(design, probe, options, cell, seed)


def _claimed(design: Design, cell: Cell, seed: int, work, *args) -> None:
    """Do ``work(design, cell, seed, *args)`` for one run unless another process holds the
    run's claim."""
    name = run_name(cell, seed)
    if _result_path(design, name).is_file():
        return
    claim = DirectoryLock(design.runs_dir / name, what="run", lock_name=CLAIM_FILE)
    try:
        claim.acquire()
    except DirectoryLockedError:
        log.info("%s: another process has it; skipped", name)
        return
    try:
        work(design, cell, seed, *args)
    finally:
        claim.release()


def stage_statistics(design: Design, seeds: Sequence[int] | None = None) -> Path:
    """Read every per-run result once, compute the design's statistics, write ``results.nc``
    (and, for a design that keeps every checkpoint's arrays, ``detail.nc``: the runs over
    ``(regime, seed, epoch)`` with their over-checkpoint link, which the report draws)."""
    from geomxai.study import save_results, stamp

    start = time.perf_counter()
    per_run = load_per_run(design)
    results = study_statistics(design, per_run)
    detail = detail_results(design, per_run) if design.keep == "all" else None
    seconds = wall_time(design, per_run)
    seconds["statistics_s"] = round(time.perf_counter() - start)
    if detail is not None:
        save_results(stamp(detail, command=_command()), design.out_dir / "detail.nc")
    path = design.out_dir / "results.nc"
    save_results(stamp(results, command=_command(), wall_time=json.dumps(seconds)), path)
    log.info("results: %s (%d runs)", path, len(per_run))
    return path


def _stale_runs(design: Design, results) -> str | None:
    """Why ``results.nc`` is not the statistics of the per-run results now under ``out/runs``
    (runs added or removed since it was written, as after pulling a study's newer results), or
    None where it is."""
    present = set(analysed_runs(design))
    used = runs_in(results)
    if present == used:
        return None
    added, removed = sorted(present - used), sorted(used - present)
    parts = [f"{len(added)} added ({', '.join(added[:3])}{', ...' if len(added) > 3 else ''})"]
    if removed:
        parts.append(f"{len(removed)} gone ({', '.join(removed[:3])})")
    return f"results.nc holds {len(used)} runs, out/runs {len(present)}: " + "; ".join(parts)


def stage_report(design: Design, seeds: Sequence[int] | None = None) -> Path:
    """Render the report from ``results.nc``, first (re)written by the statistics stage where it
    is missing or was computed from another set of per-run results than ``out/runs`` holds."""
    from geomxai.report import build_study_report
    from geomxai.study import open_results_file

    path = design.out_dir / "results.nc"
    stale = None
    if path.is_file():
        with open_results_file(path) as before:
            stale = _stale_runs(design, before)
    if stale:
        log.info("%s; rebuilding the statistics first", stale)
    if stale or not path.is_file():
        stage_statistics(design)
    results = open_results_file(path)
    detail_path = design.out_dir / "detail.nc"
    detail = (
        open_results_file(detail_path) if design.keep == "all" and detail_path.is_file() else None
    )
    return build_study_report(results, design.out_dir, detail=detail)


_RUNNERS = {
    "train": stage_train,
    "analyse": stage_analyse,
    "runs": stage_runs,
    "statistics": stage_statistics,
    "report": stage_report,
}


def _refuse_linked_locks(design: Design) -> None:
    """A lock file's name that is a link, in the study's runs folder (which older versions
    locked) or in a planned run's folder, is refused before any work, naming it and the fix:
    whoever put it there meant a lock to write through it. Plain leftover lock files are fine."""
    from geomxai._lock import refuse_linked_lock
    from geomxai.rundir import LOCK_FILE

    refuse_linked_lock(design.runs_dir, what="the study's runs folder", lock_name=LOCK_FILE)
    for cell, seed in design.plan():
        folder = design.runs_dir / run_name(cell, seed)
        refuse_linked_lock(folder, what="run directory", lock_name=LOCK_FILE)


def run_design(design: Design, *, stages: Sequence[str] = ALL, seeds: Sequence[int] | None = None):
    """Run the named stages of a design in order; returns the last stage's output (the report's
    ``index.html`` for a whole study).

    ``report`` always rebuilds the statistics first when a stage before it changed the per-run
    results, so a report never shows stale numbers.
    """
    for stage in stages:
        if stage not in _RUNNERS:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
    design.plan(seeds)  # unknown seeds are refused before any stage
    _refuse_linked_locks(design)
    out = None
    changed = False
    for stage in stages:
        if stage == "report" and changed:
            stage_statistics(design)
        out = _RUNNERS[stage](design, seeds)
        changed = stage in ("train", "analyse", "runs") or (changed and stage != "statistics")
    return out

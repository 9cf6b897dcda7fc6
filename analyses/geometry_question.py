"""Does the geometry of a representation explain the quality of its gradient saliency?

The study that can answer it (issue 17): converged runs on all of Fashion-MNIST, at least five
seeds per cell, a 2x2 factorial of the four regimes (masking x whitening), a dose-response of
SaliencyDecor's decorrelation weight, a between-run link controlled for accuracy, and the
reparametrisation control. Seed ``s`` means the same initialisation and data order in every cell.

It runs in stages, each resumable, so it can take several sittings on a fresh machine:

``train``
    Trains every missing run into ``--runs`` (git-ignored), seed-major (seed 0 of every cell
    first), so a partial study covers every cell with fewer seeds rather than some cells with all.
``analyse``
    Analyses each trained run that has no per-run result yet and writes its small results into
    ``--out/runs/`` (a few tens of kB each, committed; checkpoints are not): the final
    checkpoint's full analysis and the reparametrisation control, the over-epochs values, and a
    copy of the run's ``metrics.jsonl``.
``runs``
    The two above run by run (train one, analyse it, take the next), so per-run results appear
    while the study trains. Several ``runs`` processes share the plan: each takes the next run
    that no other holds.
``report``
    Builds ``--out/index.html``, ``tables.md`` and ``results.nc`` from the per-run results only,
    so it reruns anywhere without a checkpoint.

    # hours: two processes of one thread each, in the background
    for k in 0 1; do OMP_NUM_THREADS=1 nohup python analyses/geometry_question.py runs \
        > runs-$k.log 2>&1 & done
    python analyses/geometry_question.py train      # or the halves, one process each
    python analyses/geometry_question.py analyse
    python analyses/geometry_question.py report
    python analyses/geometry_question.py all        # the three in turn
    python analyses/geometry_question.py all --smoke  # a tiny check that every stage works
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import xarray as xr
from _common import command_line, setup_logging

from geomxai.train import TrainConfig, train

log = logging.getLogger("analyses.geometry_question")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHT = 0.01
WEIGHTS = (0.0, 0.001, 0.01, 0.1, 1.0)  # the dose-response of saliencydecor's lambda
FACTORIAL = ("regular", "sgt", "dbn", "saliencydecor")

# The protocol, measured before it was fixed (docs/study.md, "The converged study"): with the
# paper's lr 0.01, regular cnn2 reaches 89.4% after 20 epochs on all 60,000 images and its curve
# is flat from epoch 13; lr 0.05 reaches 89.7% in 15 epochs, 89.4% in 8 and 88.9% in 6
# (cosine schedules of that length, protocol/). 6 epochs is what fits 40 runs into the compute
# budget on 2 cores: a masked run is then about 5 minutes with one thread.
PROTOCOL = {
    "dataset": "fashion-mnist",
    "model": "cnn2",
    "train_subset": None,
    "test_subset": None,
    "batch_size": 128,
    "momentum": 0.9,
    "device": "cpu",
    "channels_last": True,
    "group_size": 16,
    "kl_weight": 1.0,
    "mask_ratio": 0.25,
    "decor_weight": DEFAULT_WEIGHT,
}


@dataclass(frozen=True)
class Cell:
    """One trained configuration of the design: a label and the fields that differ."""

    label: str
    regime: str
    decor_weight: float = DEFAULT_WEIGHT

    def overrides(self) -> dict:
        return {"regime": self.regime, "decor_weight": self.decor_weight}

    def run_name(self, seed: int) -> str:
        return f"{self.label}-s{seed}"


def weight_label(weight: float) -> str:
    return "saliencydecor" if weight == DEFAULT_WEIGHT else f"saliencydecor-lambda{weight:g}"


def cells() -> list[Cell]:
    """The factorial's four cells, then the dose-response's other weights (lambda = 0.01 is the
    factorial's saliencydecor cell, shared by both)."""
    out = [Cell(r, r) for r in FACTORIAL]
    out += [Cell(weight_label(w), "saliencydecor", w) for w in WEIGHTS if w != DEFAULT_WEIGHT]
    return out


def base_config(args) -> TrainConfig:
    values = {**PROTOCOL, "epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay}
    if args.smoke:
        values.update(train_subset=600, test_subset=300, dataset=args.dataset)
    return TrainConfig(**values, progress=False)


def planned_runs(args) -> list[tuple[Cell, int]]:
    """Seed-major order: every cell at seed 0, then every cell at seed 1, ..."""
    return [(cell, seed) for seed in args.seeds for cell in cells()]


@contextlib.contextmanager
def claimed(args, name: str):
    """Yields whether this process holds run ``name``'s claim (an OS lock on
    ``--runs/.claims/<name>``, dropped when the process ends however it ends), so several
    ``runs`` processes share one plan without doing a run twice and a killed one leaves no
    stale claim."""
    folder = args.runs / ".claims"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def train_run(args, base: TrainConfig, cell: Cell, seed: int, tag: str) -> None:
    """Trains one planned run unless its per-run result exists; resumes a cut-off run."""
    out = args.runs / cell.run_name(seed)
    if (args.out / "runs" / f"{cell.run_name(seed)}.nc").is_file():
        log.info("%s %s: analysed already, not retrained", tag, out.name)
        return
    config = base.replace(
        **cell.overrides(), seed=seed, out_dir=str(out), resume=(out / "checkpoints").is_dir()
    )
    start = time.perf_counter()
    log.info("%s training %s", tag, out.name)
    train(config)
    log.info("%s %s done in %.0f s", tag, out.name, time.perf_counter() - start)


def stage_train(args) -> None:
    base = base_config(args)
    plan = planned_runs(args)
    for i, (cell, seed) in enumerate(plan, 1):
        train_run(args, base, cell, seed, f"[{i}/{len(plan)}]")


# Per-run results keep what the report reads and nothing it does not: the over-epochs values of
# every scalar metric, the final checkpoint's arrays (curves, spectrum, example maps), and the
# reparametrisation control of the final checkpoint. Saliency maps of the whole probe and the
# top eigenvectors of every epoch (which only the dynamics need, already computed) are dropped.
_DROP = ("probe_saliency", "top_eigvecs", "top_eigvals", "probe_images")
_FINAL_ONLY = (
    "saliency_maps",
    "corr_spectrum",
    "morf_curve",
    "lerf_curve",
    "random_curve",
    "deletion_curve",
    "insertion_curve",
    "deletion_auc_per_sample",
    "insertion_auc_per_sample",
)


def final_only(ds: xr.Dataset) -> xr.Dataset:
    """The arrays the report reads at the final checkpoint only, without their other epochs."""
    for name in _FINAL_ONLY:
        if name in ds and "epoch" in ds[name].dims:
            ds[name] = ds[name].isel(epoch=-1, drop=True)
    return ds


def analysed_epochs(epochs: list[int]) -> list[int]:
    """The checkpoints analysed for the over-epochs view: about six spread over training (roughly
    doubling gaps, where the curves move most) plus the last two, so the final swap rate and
    saliency stability compare adjacent checkpoints. A full analysis of every epoch costs about
    4 minutes a run on 2 cores; this keeps the study within its compute budget.

    >>> analysed_epochs(list(range(16)))
    [1, 2, 4, 7, 11, 14, 15]
    >>> analysed_epochs([0, 1, 2])
    [1, 2]
    """
    last = max(epochs)
    keep = {e for e in (1, 2, 4, 7, 11) if e < last - 1} | {max(last - 1, 1), last}
    return sorted(e for e in keep if e in epochs)


def analysis_options(args):
    from geomxai.study import AnalysisOptions

    return AnalysisOptions(probe_size=args.probe_size, n_examples=4, seed=0)


def per_run_result(run_dir: Path, probe, options) -> xr.Dataset:
    """One run's small result: over-epochs scalars, final arrays and the control."""
    import geomxai
    from geomxai.rundir import read_run
    from geomxai.study import analyze_run, reparametrization_control

    run = read_run(run_dir)
    ds = analyze_run(
        run_dir, options=options, probe=probe, progress=False, epochs=analysed_epochs(run.epochs)
    )
    ds = ds.drop_vars([v for v in _DROP if v in ds.variables])
    ds = final_only(ds)
    final = max(run.checkpoints)
    model, _ = geomxai.load_checkpoint(run.checkpoints[final])
    control = reparametrization_control(model, probe.images, probe.labels)
    # Prefixed, dims included, so the control's `model` and `metric` dims sit beside the
    # analysis's own without clashing.
    control = control.rename({d: f"control_{d}" for d in control.dims})
    control = control.rename({v: f"control_{v}" for v in control.data_vars})
    for name, var in control.data_vars.items():
        ds[name] = var
    ds.attrs["control"] = json.dumps({k: str(v) for k, v in control.attrs.items()})
    ds.attrs["final_epoch"] = int(final)
    return ds


def analyse_run(args, probe, options, cell: Cell, seed: int) -> None:
    """Writes one finished run's per-run result, unless it exists or the run is not finished."""
    from geomxai.rundir import read_run
    from geomxai.study import save_results, stamp

    name = cell.run_name(seed)
    target = args.out / "runs" / f"{name}.nc"
    if target.is_file():
        return
    try:
        run = read_run(args.runs / name)
    except (FileNotFoundError, ValueError):
        return  # not trained yet
    if max(run.checkpoints, default=-1) < args.epochs:
        log.info(
            "%s: %d of %d epochs trained; analysed later", name, max(run.checkpoints), args.epochs
        )
        return
    start = time.perf_counter()
    ds = per_run_result(args.runs / name, probe, options)
    ds.attrs.update({"cell": cell.label, "analysis_seconds": round(time.perf_counter() - start, 1)})
    target.parent.mkdir(parents=True, exist_ok=True)
    # The metrics first: a result file is what marks a run done, so it is written last.
    (args.out / "runs" / f"{name}.metrics.jsonl").write_text(
        "".join(json.dumps(m, sort_keys=True) + "\n" for m in run.metrics.values())
    )
    save_results(stamp(ds, command=command_line()), target)
    log.info("analysed %s in %.0f s -> %s", name, time.perf_counter() - start, target)


def analysis_probe(args):
    from geomxai.study import make_probe

    options = analysis_options(args)
    return make_probe(args.dataset, options.probe_size), options


def stage_analyse(args) -> None:
    probe, options = analysis_probe(args)
    for cell, seed in planned_runs(args):
        analyse_run(args, probe, options, cell, seed)


def stage_runs(args) -> None:
    """Train and analyse each planned run in turn, so per-run results appear while the study
    trains. Several of these processes can share the plan (each takes the next run no other
    holds): on 2 cores, two processes of one thread each train cnn2 about 1.3x faster than one
    of two threads, whose small operators do not scale across threads."""
    base = base_config(args)
    probe, options = analysis_probe(args)
    plan = planned_runs(args)
    for i, (cell, seed) in enumerate(plan, 1):
        with claimed(args, cell.run_name(seed)) as mine:
            if mine:
                train_run(args, base, cell, seed, f"[{i}/{len(plan)}]")
                analyse_run(args, probe, options, cell, seed)


def protocol_text(args) -> str:
    base = base_config(args)
    return (
        f"{base.dataset}, "
        + (f"{base.train_subset} training images" if base.train_subset else "all training images")
        + ", "
        + (f"{base.test_subset} test images" if base.test_subset else "the full test set")
        + f" for test accuracy; model {base.model}; {base.epochs} epochs, SGD momentum {base.momentum}, lr "
        f"{base.lr:g} with cosine annealing, weight decay {base.weight_decay:g}, batch "
        f"{base.batch_size}; masking ratio {base.mask_ratio}, KL weight {base.kl_weight}, group "
        f"size {base.group_size}, masking gradient in {base.mask_gradient_mode} mode. Cells: "
        + ", ".join(c.label for c in cells())
        + f"; seeds {args.seeds} (seed s = the same initialisation and data order in every "
        f"cell). Geometry and saliency on the first {args.probe_size} test images."
    )


def stage_report(args) -> None:
    from _question_report import build, load_runs

    from geomxai.study import save_results, stamp

    start = time.perf_counter()
    planned = {c.label: len(args.seeds) for c in cells()}
    per_run = load_runs(args.out)
    stats = build(
        args.out, per_run, header=protocol_text(args), planned=planned, dataset=args.dataset
    )
    train_s = 0.0
    for path in sorted((args.out / "runs").glob("*.metrics.jsonl")):
        train_s += sum(
            json.loads(line).get("seconds", 0.0)
            for line in path.read_text().splitlines()
            if line.strip()
        )
    analysis_s = sum(float(ds.attrs.get("analysis_seconds", 0.0)) for _, ds in per_run)
    merged = xr.merge(
        [
            ds.rename({v: f"{key}_{v}" for v in ds.data_vars})
            for key, ds in stats.items()
            if key not in ("runs",) and ds.data_vars
        ]
        + [stats["runs"]],
        compat="override",
        join="outer",
        combine_attrs="drop",
    )
    seconds = {
        "training_s": round(train_s),
        "analysis_s": round(analysis_s),
        "report_s": round(time.perf_counter() - start),
    }
    save_results(
        stamp(
            merged,
            command=command_line(),
            protocol=protocol_text(args),
            wall_time=json.dumps(seconds),
        ),
        args.out / "results.nc",
    )
    log.info(
        "report: %s (training %.1f h, analysis %.1f h of compute)",
        args.out / "index.html",
        train_s / 3600,
        analysis_s / 3600,
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=("train", "analyse", "runs", "report", "all"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--probe-size", type=int, default=1000, help="test images analysed per run")
    p.add_argument("--runs", type=Path, default=None, help="run directories (git-ignored)")
    p.add_argument("--out", type=Path, default=None, help="report folder")
    p.add_argument("--smoke", action="store_true", help="tiny runs on a subset, to check stages")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs, args.probe_size = [0, 1], 2, 200
        args.out = args.out or Path("runs/smoke/geometry-question/report")
        args.runs = args.runs or Path("runs/smoke/geometry-question/runs")
    args.out = args.out or ROOT / "reports" / "fashion-mnist-converged"
    args.runs = args.runs or ROOT / "runs" / "fashion-mnist-converged"
    return args


STAGES = {
    "train": stage_train,
    "analyse": stage_analyse,
    "runs": stage_runs,
    "report": stage_report,
}


def main(argv=None) -> None:
    setup_logging()
    args = parse_args(argv)
    log.info("%s", command_line())
    stages = ("train", "analyse", "report") if args.stage == "all" else (args.stage,)
    for stage in stages:
        STAGES[stage](args)


if __name__ == "__main__":
    sys.exit(main())

"""The statistics stage: per-run results in, one results Dataset out, as the design asks.

This module only composes: the per-run rows come from :mod:`geomxai.study` (the one reader of a
per-run result's layout), every statistic from :mod:`geomxai.stats`, and every family of claims
is corrected with the design's one correction and called with :func:`geomxai.stats.verdict`.
No report code computes anything; the report reads what this stage writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from geomxai import schema, stats
from geomxai.pipeline._design import Design
from geomxai.rundir import run_name
from geomxai.study import control_record, epoch_record, run_record

log = logging.getLogger(__name__)

from geomxai.schema import SCHEMA_VERSION  # noqa: E402  (one layout number for every results file)

_OTHER = "~"  # prefix of the cells a view leaves out of a comparison


# -- the runs table ------------------------------------------------------------------------------


def _metric_lists(design: Design, per_run: Mapping[str, xr.Dataset]) -> dict[str, list[str]]:
    spec = design.statistics
    present = set().union(*(ds.data_vars for ds in per_run.values())) if per_run else set()

    def chosen(given, default):
        names = list(given) if given is not None else [m for m in default if m in present]
        return list(dict.fromkeys(names))

    fidelity = _with_variants(chosen(spec.fidelity, schema.fidelity_metrics()), per_run)
    geometry = chosen(spec.geometry, schema.geometry_metrics())
    dynamics = [m for m in spec.dynamics if m not in geometry]
    return {
        "accuracy": list(spec.accuracy),
        "fidelity": fidelity,
        "geometry": geometry,
        "dynamics": dynamics,
    }


def _with_variants(names: list[str], per_run: Mapping[str, xr.Dataset]) -> list[str]:
    """Each metric, or in its place its variants where the runs measured it with several
    saliency methods or fills (``morf_auc__integrated_gradients__road``, ...): each is then a
    metric of its own, with its own contrasts and verdicts."""
    from geomxai.study import variant_names

    out = []
    for name in names:
        variants = [v for ds in per_run.values() for v in variant_names(ds, name)]
        out += list(dict.fromkeys(variants)) or [name]
    return out


ACCOUNTING = ("probe_acc", "n_live_units", "n_dead_units", "entanglement_all_units")
"""What each run's row carries beside the design's metric lists: the probe's accuracy, the
feature layer's live and dead units, and entanglement over all units (dead ones included; the
value the live-unit ``entanglement`` replaced), so the report can show them run by run."""


def _cell_of(design: Design, name: str, ds: xr.Dataset) -> str | None:
    cell = ds.attrs.get("cell")
    if cell in design.cell_names:
        return str(cell)
    for c in design.cell_names:
        for s in design.seeds:
            if run_name(c, s) == name:
                return c
    return None


def runs_table(design: Design, per_run: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """One row per run: the final scalars, with coords ``cell``, ``regime``, ``seed`` and every
    field a cell varies, taken from each run's own recorded training config."""
    lists = _metric_lists(design, per_run)
    names = [*lists["accuracy"], *lists["fidelity"], *lists["geometry"], *lists["dynamics"]]
    names += [n for n in ACCOUNTING if n not in names]
    records, cells, configs = [], [], {}
    for name, ds in per_run.items():
        cell = _cell_of(design, name, ds)
        if cell is None:
            log.warning("%s: not a run of design %s; left out", name, design.name)
            continue
        config = json.loads(ds.attrs["config"])
        configs[name] = config
        rec = {"run": name, "regime": config["regime"], "seed": int(config["seed"])}
        rec.update(run_record(ds, names))
        records.append(rec)
        cells.append(cell)
    if not records:
        raise FileNotFoundError(
            f"no per-run result of design {design.name!r} under {design.out_dir / 'runs'}; run "
            f"`geomxai study {design.source} --stage analyse` first"
        )
    runs = stats.runs_dataset(records)
    coords = {"cell": ("run", cells)}
    for field in design.varied[1:]:
        coords[field] = ("run", [configs[str(r)].get(field) for r in runs["run"].values])
    runs = runs.assign_coords(coords)
    runs = runs.drop_vars([n for n in runs.data_vars if not np.isfinite(runs[n]).any()])
    runs.attrs["run_configs"] = json.dumps(configs, sort_keys=True)
    images = {}
    for name, ds in per_run.items():
        if name in configs:
            images[name] = [
                int(ds.attrs.get(f"{split}_images") or image_count(configs[name], split))
                for split in ("train", "test")
            ]
    runs.attrs["run_images"] = json.dumps(images, sort_keys=True)
    warnings = {}
    for name, ds in per_run.items():
        try:
            said = json.loads(ds.attrs.get("warnings", "[]") or "[]")
        except (TypeError, ValueError):
            said = [str(ds.attrs["warnings"])]
        if said and name in configs:
            warnings[name] = sorted(set(map(str, said)))
    runs.attrs["run_warnings"] = json.dumps(warnings, sort_keys=True)
    return runs


def image_count(config: Mapping, split: str) -> int:
    """Images of a split that a run used: its subset, or the dataset's whole split (0 where
    the dataset is not installed here to count)."""
    subset = config.get(f"{split}_subset")
    if subset:
        return int(subset)
    from geomxai.data import DatasetNotFoundError, load_dataset

    try:
        bundle = load_dataset(config["dataset"])
    except DatasetNotFoundError:
        return 0
    return len(bundle.train if split == "train" else bundle.test)


def detail_results(design: Design, per_run: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """The runs over ``(regime, seed, epoch)`` (the cell as ``regime``) with the link over
    checkpoints: the layout of :func:`geomxai.study.analyze_runs`, for a small study's figures."""
    from geomxai.study import combine_runs, linked

    tagged, images = [], None
    for name, ds in per_run.items():
        cell = _cell_of(design, name, ds)
        if cell is None:
            continue
        if "probe_images" in ds:  # the same probe for every run: kept once, without run dims
            images = ds["probe_images"] if images is None else images
            ds = ds.drop_vars("probe_images")
        ds = ds.copy()
        ds.attrs["regime"] = cell
        tagged.append(ds)
    detail = combine_runs(tagged)
    if images is not None:
        detail["probe_images"] = images
    from geomxai.study import AnalysisOptions

    detail.attrs["analysis_options"] = AnalysisOptions(**design.analysis).key()
    return linked(detail, study=design.name) if detail.sizes.get("epoch", 0) > 1 else detail


def _view(runs: xr.Dataset, labels: Mapping[str, str]) -> xr.Dataset:
    """The runs with ``regime`` relabelled by cell (``labels``: cell -> label; other cells keep
    a label no comparison names), and without the varied fields, so a statistic of
    :mod:`geomxai.stats` selects exactly the design's cells."""
    cell = [str(c) for c in runs["cell"].values]
    view = runs.assign_coords(regime=("run", [labels.get(c, _OTHER + c) for c in cell]))
    drop = [c for c in view.coords if c not in ("run", "regime", "seed")]
    return view.drop_vars(drop)


def _present(runs: xr.Dataset, names: Sequence[str]) -> list[str]:
    return [m for m in names if m in runs.data_vars]


# -- families and verdicts -------------------------------------------------------------------------


def _directions(names) -> list[str | None]:
    out = []
    for n in names:
        try:
            out.append(schema.direction(str(n)))
        except (KeyError, ValueError):
            out.append(None)
    return out


def _called(
    ds: xr.Dataset,
    design: Design,
    *,
    est="estimate",
    lo="ci_low",
    hi="ci_high",
    p="p_value",
    metric_dim="metric",
    prefix="",
) -> xr.Dataset:
    """Add ``<prefix>q_value`` (the family's adjusted p-values) and ``<prefix>verdict``."""
    spec = design.statistics
    q = stats.adjust(ds[p].values, spec.correction)
    ds[f"{prefix}q_value"] = (ds[p].dims, q)
    dirs = dict(
        zip(map(str, ds[metric_dim].values), _directions(ds[metric_dim].values), strict=True)
    )
    words = np.empty(ds[est].shape, dtype=object)
    for idx in np.ndindex(ds[est].shape):
        sel = dict(zip(ds[est].dims, idx, strict=True))
        m = str(ds[metric_dim].values[sel[metric_dim]])
        words[idx] = stats.verdict(
            float(ds[est].values[idx]),
            float(ds[lo].values[idx]),
            float(ds[hi].values[idx]),
            float(q[idx]),
            dirs[m],
            alpha=spec.alpha,
        )
    ds[f"{prefix}verdict"] = (ds[est].dims, words.astype(str))
    ds.attrs[f"{prefix}family"] = f"{int(np.isfinite(ds[p].values).sum())} claims"
    ds.attrs[f"{prefix}correction"] = stats.CORRECTION_LABELS[spec.correction]
    return ds


# -- the statistics --------------------------------------------------------------------------------


def _contrasts(design, runs, lists):
    spec = design.statistics
    if not spec.treatment or not spec.baselines:
        return None
    metrics = _present(runs, [*lists["accuracy"], *lists["fidelity"]])
    view = _view(runs, {c: c for c in design.cell_names})
    pc = stats.paired_contrasts(
        view, metrics, spec.treatment, list(spec.baselines), confidence=spec.confidence
    )
    return _called(pc, design)


def _factorial(design, runs, lists):
    spec = design.statistics
    if not spec.factorial:
        return None
    metrics = _present(runs, [*lists["accuracy"], *lists["fidelity"], *lists["geometry"]])
    view = _view(runs, {cell: pos for pos, cell in spec.factorial.items()})
    fe = stats.factorial_effects(view, metrics, confidence=spec.confidence)
    fe = fe.rename({"regime": "factorial_cell"}) if "regime" in fe.dims else fe
    return _called(fe, design)


def _doses(design, runs, lists):
    spec = design.statistics
    out = []
    metrics = _present(runs, [*lists["accuracy"], *lists["fidelity"], *lists["geometry"]])
    for d in spec.doses:
        view = _view(runs, dict.fromkeys(d.cells, "dose"))
        view = view.assign_coords({d.field: ("run", np.asarray(runs[d.field].values, dtype=float))})
        dr = stats.dose_response(
            view, metrics, dose=d.field, regime="dose", confidence=spec.confidence
        )
        dr = _called(
            dr,
            design,
            est="slope",
            lo="slope_ci_low",
            hi="slope_ci_high",
            p="slope_p_value",
            prefix="slope_",
        )
        dr.attrs["field"] = d.field
        dr.attrs["cells"] = json.dumps(list(d.cells))
        out.append(dr)
    return out


def _links(design, runs, lists):
    spec = design.statistics
    if not spec.link:
        return None, None
    geometry = [
        m
        for m in (*lists["geometry"], *lists["dynamics"])
        if m in runs and np.isfinite(runs[m]).sum() > 3
    ]
    fidelity = [m for m in lists["fidelity"] if m in runs and np.isfinite(runs[m]).sum() > 3]
    if not geometry or not fidelity:
        return None, None
    control = spec.link_control if spec.link_control in runs else None
    pooled = stats.run_link(
        runs,
        geometry,
        fidelity,
        control=control,
        n_boot=spec.link_n_boot,
        seed=0,
        confidence=spec.confidence,
        correction=spec.correction,
    )
    within = None
    if spec.within_cell:
        within = stats.within_cell_link(
            runs,
            geometry,
            fidelity,
            cell="cell",
            control=control,
            n_boot=spec.link_n_boot,
            seed=0,
            confidence=spec.confidence,
            correction=spec.correction,
        )
    return pooled, within


def _within_run(design, per_epoch, lists):
    spec = design.statistics
    if not spec.within_run or per_epoch is None or per_epoch.sizes.get("epoch", 0) < 3:
        return None
    geometry = [m for m in lists["geometry"] if m in per_epoch]
    fidelity = [m for m in lists["fidelity"] if m in per_epoch]
    if not geometry or not fidelity:
        return None
    return stats.within_run_link(
        per_epoch,
        geometry,
        fidelity,
        min_epoch=1,
        n_boot=spec.within_run_n_boot,
        seed=0,
        confidence=spec.confidence,
    )


def _power(design, runs):
    spec = design.statistics
    if not spec.power_contrasts:
        return None
    metrics = _present(runs, spec.power_metrics or spec.accuracy)
    labels = {c: c for c in design.cell_names}
    if spec.factorial:
        labels.update({cell: pos for pos, cell in spec.factorial.items()})
    contrasts = [_relabel_contrast(c, design, labels) for c in spec.power_contrasts]
    stated = {
        (_relabel_contrast(c, design, labels), m): v
        for m, per in spec.power_stated.items()
        for c, v in per.items()
    }
    pw = stats.power_analysis(
        _view(runs, labels), metrics, contrasts, alpha=spec.alpha, stated=stated
    )
    pw = pw.assign_coords(contrast=list(spec.power_contrasts))
    if spec.power_source:
        pw.attrs["stated_source"] = spec.power_source
    return pw


def _cells_summary(design: Design, runs: xr.Dataset, lists) -> xr.Dataset:
    """Each metric's mean over seeds per cell, with the one t-interval (Tables I and II form)."""
    spec = design.statistics
    metrics = _present(
        runs, [*lists["accuracy"], *lists["fidelity"], *lists["geometry"], *lists["dynamics"]]
    )
    metrics += _present(runs, [m for m in ACCOUNTING if m not in metrics])
    cells = [c for c in design.cell_names if c in set(map(str, runs["cell"].values))]
    shape = (len(cells), len(metrics))
    out = {k: np.full(shape, np.nan) for k in ("mean", "ci_low", "ci_high", "n")}
    for i, c in enumerate(cells):
        mask = runs["cell"].values == c
        for j, m in enumerate(metrics):
            values = np.asarray(runs[m].values[mask], dtype=float)
            values = values[np.isfinite(values)]
            out["n"][i, j] = values.size
            if values.size:
                out["mean"][i, j], out["ci_low"][i, j], out["ci_high"][i, j], _ = stats.t_interval(
                    values, spec.confidence
                )
    return xr.Dataset(
        {k: (("summary_cell", "summary_metric"), v) for k, v in out.items()},
        coords={"summary_cell": cells, "summary_metric": metrics},
    )


def _relabel_contrast(contrast: str, design: Design, labels: Mapping[str, str]) -> str:
    if contrast in stats.EFFECTS:
        return contrast
    names = design.cell_names
    for i, ch in enumerate(contrast):
        if ch == "-" and contrast[:i] in names and contrast[i + 1 :] in names:
            return f"{labels[contrast[:i]]}-{labels[contrast[i + 1 :]]}"
    raise ValueError(f"power contrast {contrast!r} names no two cells of the design")


def _per_epoch(per_run: Mapping[str, xr.Dataset], runs: xr.Dataset, lists) -> xr.Dataset | None:
    names = [*lists["accuracy"], *lists["fidelity"], *lists["geometry"], *lists["dynamics"]]
    parts = [
        epoch_record(per_run[str(r)], names).expand_dims(run=[str(r)]) for r in runs["run"].values
    ]
    parts = [p for p in parts if p.data_vars]
    if not parts:
        return None
    return xr.concat(parts, dim="run", join="outer")


def _control(per_run: Mapping[str, xr.Dataset], runs: xr.Dataset) -> xr.Dataset | None:
    rows = [(str(r), control_record(per_run[str(r)])) for r in runs["run"].values]
    rows = [(r, c) for r, c in rows if c is not None]
    if not rows:
        return None
    metrics = rows[0][1]["metric"]
    rows = [(r, c) for r, c in rows if c["metric"] == metrics]
    relative = all(
        json.loads(per_run[r].attrs.get("control", "{}")).get("function_rtol") for r, _ in rows
    )
    out = xr.Dataset(
        {
            "relative_change": (
                ("control_run", "control_metric"),
                np.array([c["relative_change"] for _, c in rows]),
            ),
            "invariant": (
                ("control_run", "control_metric"),
                np.array([c["invariant"] for _, c in rows]),
            ),
            "logit_max_rel_diff": (
                "control_run",
                np.array([c["logit_max_rel_diff"] for _, c in rows]),
            ),
            "saliency_max_rel_diff": (
                "control_run",
                np.array([c["saliency_max_rel_diff"] for _, c in rows]),
            ),
        },
        coords={"control_run": [r for r, _ in rows], "control_metric": metrics},
    )
    out.attrs["function_check"] = "relative" if relative else "absolute"
    return out


def _learning_curves(design: Design, runs: xr.Dataset) -> xr.Dataset | None:
    """Test accuracy after every epoch of every run, from its copied ``metrics.jsonl``."""
    rows = {}
    for r in runs["run"].values:
        path = design.out_dir / "runs" / f"{r}.metrics.jsonl"
        if path.is_file():
            from geomxai.rundir import read_metrics_file

            rows[str(r)] = {int(m["epoch"]): m.get("test_acc") for m in read_metrics_file(path)}
    if not rows:
        return None
    epochs = sorted({e for v in rows.values() for e in v})
    values = np.full((len(runs["run"]), len(epochs)), np.nan)
    for i, r in enumerate(map(str, runs["run"].values)):
        for j, e in enumerate(epochs):
            v = rows.get(r, {}).get(e)
            if v is not None:
                values[i, j] = float(v)
    curves = xr.Dataset(
        {"curve_test_acc": (("run", "train_epoch"), values)}, coords={"train_epoch": epochs}
    )
    summary = stats.convergence_summary(curves["curve_test_acc"].assign_coords(cell=runs["cell"]))
    return curves.merge(summary.drop_attrs())


def _trials(design: Design) -> xr.Dataset | None:
    """The protocol trials measured before a study (``out/protocol/*.metrics.jsonl``)."""
    from geomxai.rundir import read_metrics_file

    folder = design.out_dir / "protocol"
    out = []
    for path in sorted(folder.glob("*.metrics.jsonl")) if folder.is_dir() else []:
        records = read_metrics_file(path)
        acc = [r["test_acc"] for r in records if "test_acc" in r]
        if acc:
            name = path.name.removesuffix(".metrics.jsonl")
            out.append((name, max(int(r.get("epoch", 0)) for r in records), acc[-1], max(acc)))
    if not out:
        return None
    out.sort(key=lambda t: (t[1], t[0]))
    return xr.Dataset(
        {
            "trial_epochs": ("trial", [t[1] for t in out]),
            "trial_final_acc": ("trial", [t[2] for t in out]),
            "trial_best_acc": ("trial", [t[3] for t in out]),
        },
        coords={"trial": [t[0] for t in out]},
    )


def _prefixed(ds: xr.Dataset | None, prefix: str) -> xr.Dataset | None:
    if ds is None:
        return None
    out = ds.rename({v: f"{prefix}{v}" for v in ds.data_vars})
    out.attrs = {f"{prefix}{k}": v for k, v in ds.attrs.items()}
    return out


def study_statistics(design: Design, per_run: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """Every statistic the design asks of its per-run results, as one Dataset.

    Variables are prefixed by family (``contrasts_``, ``factorial_``, ``dose_``/``doseN_``,
    ``link_``, ``within_cell_``, ``within_run_``, ``power_``, ``control_``); the runs table's
    variables keep their names on dim ``run``. Attrs: ``design`` and ``run_configs`` (JSON), the
    metric lists, each family's size and correction, and ``schema_version``.
    """
    runs = runs_table(design, per_run)
    lists = _metric_lists(design, per_run)
    per_epoch = _per_epoch(per_run, runs, lists)
    pooled, within = _links(design, runs, lists)
    doses = _doses(design, runs, lists)
    parts = [
        _prefixed(_contrasts(design, runs, lists), "contrasts_"),
        _prefixed(_factorial(design, runs, lists), "factorial_"),
        *[
            _prefixed(
                d.rename({"dose": f"dose{i}" if i else "dose"}) if i else d,
                f"dose{i}_" if i else "dose_",
            )
            for i, d in enumerate(doses)
        ],
        _prefixed(pooled, "link_"),
        _prefixed(within, "within_cell_"),
        _prefixed(_within_run(design, per_epoch, lists), "within_run_"),
        _prefixed(_power(design, runs), "power_"),
        _prefixed(_control(per_run, runs), "control_"),
        _prefixed(_cells_summary(design, runs, lists), "cells_"),
        _learning_curves(design, runs),
        _trials(design),
    ]
    if per_epoch is not None:
        parts.append(
            per_epoch.rename({v: f"epoch_{v}" for v in per_epoch.data_vars})
            .rename({"epoch": "analysed_epoch"})
            .drop_vars("run")
        )
    attrs = dict(runs.attrs)
    for p in parts:
        if p is not None:
            attrs.update(p.attrs)
    merged = xr.merge(
        [p for p in parts if p is not None] + [runs],
        compat="override",
        join="outer",
        combine_attrs="drop",
    )
    merged.attrs.update(attrs)
    used = {str(c.get("dataset")) for c in json.loads(runs.attrs["run_configs"]).values()}
    asked = str(design.train.get("dataset", "fashion-mnist"))
    if used != {asked}:
        merged.attrs["note"] = (
            f"The design asks for {asked}; these runs were trained on {', '.join(sorted(used))}"
            + (
                f" (its [study] fallback_dataset, used where {asked} was not installed)."
                if design.fallback_dataset in used
                else "."
            )
        )
    merged.attrs.update(
        {
            "schema_version": SCHEMA_VERSION,
            "design": design.to_json(),
            "study": design.name,
            "title": design.title,
            "metric_lists": json.dumps(lists),
        }
    )
    return merged


def analysed_runs(design: Design) -> list[str]:
    """The names of the design's planned runs whose per-run result is under ``out/runs``
    (files of runs the design does not plan are not counted), sorted."""
    folder = design.out_dir / "runs"
    wanted = {run_name(c, s) for c, s in design.plan()}
    found = {p.stem for p in folder.glob("*.nc")} if folder.is_dir() else set()
    return sorted(found & wanted)


def runs_in(results: xr.Dataset) -> set[str]:
    """The names of the runs a study's ``results.nc`` was computed from (its ``run_configs``;
    none for results written before the engine)."""
    return set(json.loads(results.attrs.get("run_configs", "{}") or "{}"))


def load_per_run(design: Design) -> dict[str, xr.Dataset]:
    """Every per-run result of the design under ``out/runs``, each read once (in memory)."""
    from geomxai.study import open_results_file

    folder = design.out_dir / "runs"
    return {name: open_results_file(folder / f"{name}.nc") for name in analysed_runs(design)}


def wall_time(design: Design, per_run: Mapping[str, xr.Dataset]) -> dict[str, float]:
    """Compute spent: training seconds (from each run's ``metrics.jsonl``) and analysis seconds."""
    from geomxai.rundir import read_metrics_file

    train_s = 0.0
    for name in per_run:
        path = design.out_dir / "runs" / f"{name}.metrics.jsonl"
        if path.is_file():
            train_s += sum(float(r.get("seconds", 0.0) or 0.0) for r in read_metrics_file(path))
    analysis_s = sum(float(ds.attrs.get("analysis_seconds", 0.0)) for ds in per_run.values())
    return {"training_s": round(train_s), "analysis_s": round(analysis_s)}

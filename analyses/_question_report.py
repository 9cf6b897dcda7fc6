"""The report of ``geometry_question.py``: tables, figures and verdicts from per-run results only.

Everything here reads the small per-run files the ``analyse`` stage commits (no checkpoint), so
the report can be rebuilt on any machine. The statistics are the package's
(:mod:`geomxai.study`): paired factorial effects and contrasts, the dose-response, the run-level
link with partial Spearman and Benjamini-Hochberg, the within-run view, the control and power.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from _common import markdown_table  # noqa: E402

from geomxai import schema  # noqa: E402
from geomxai.study import (  # noqa: E402
    dose_response,
    factorial_effects,
    paired_contrasts,
    power_analysis,
    run_link,
    runs_dataset,
    within_run_link,
)

ACCURACY = ("test_acc",)
FIDELITY = (
    "morf_auc",
    "lerf_auc",
    "fidelity_gap",
    "deletion_auc",
    "insertion_auc",
    "topq_contrast",
    "gini",
    "saliency_stability",
)
GEOMETRY = (
    "effective_rank",
    "participation_ratio",
    "mean_abs_corr",
    "corr_offdiag_fro",
    "spectrum_alpha",
    "spectrum_alpha_req",
    "entanglement",
)
DYNAMICS = ("nondegenerate_swap_rate", "subspace_overlap", "cka_previous")
CONTROL_GEOMETRY = (
    "effective_rank",
    "participation_ratio",
    "mean_abs_corr",
    "corr_offdiag_fro",
    "spectrum_alpha",
    "entanglement",
)


def label(name: str) -> str:
    try:
        return schema.label(name)
    except (KeyError, ValueError):
        return name


def direction(name: str) -> str | None:
    try:
        return schema.direction(name)
    except (KeyError, ValueError):
        return None


# ----------------------------------------------------------------------------- loading
def load_runs(folder: Path) -> list[tuple[str, xr.Dataset]]:
    """Every per-run result under ``folder/runs``, by run name."""
    out = []
    for path in sorted((folder / "runs").glob("*.nc")):
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            out.append((path.stem, ds.load()))
    return out


def _final(ds: xr.Dataset, name: str) -> float:
    if name not in ds:
        return math.nan
    da = ds[name]
    if "layer" in da.dims:
        da = da.isel(layer=0)
    if "epoch" in da.dims:
        da = da.isel(epoch=-1)
    if da.ndim:
        return math.nan
    return float(da)


def _config(ds: xr.Dataset) -> dict:
    return json.loads(ds.attrs["config"])


def runs_table(per_run: list[tuple[str, xr.Dataset]]) -> xr.Dataset:
    """The runs Dataset (one row per run, final checkpoint) the statistics read."""
    records = []
    for name, ds in per_run:
        cfg = _config(ds)
        rec = {
            "run": name,
            "regime": cfg["regime"],
            "seed": int(cfg["seed"]),
            "decor_weight": float(cfg["decor_weight"]),
        }
        for var in (*ACCURACY, *FIDELITY, *GEOMETRY, *DYNAMICS, "probe_acc"):
            rec[var] = _final(ds, var)
        records.append(rec)
    return runs_dataset(records)


def per_epoch_table(per_run: list[tuple[str, xr.Dataset]]) -> xr.Dataset:
    """Dims (run, epoch) of every scalar metric, for the within-run (over-epochs) view."""
    parts = []
    for name, ds in per_run:
        keep = {}
        for var in (*ACCURACY, *FIDELITY, *GEOMETRY, *DYNAMICS):
            if var in ds and "epoch" in ds[var].dims:
                da = ds[var].isel(layer=0, drop=True) if "layer" in ds[var].dims else ds[var]
                if da.dims == ("epoch",):
                    keep[var] = da
        parts.append(xr.Dataset(keep).expand_dims(run=[name]))
    return xr.concat(parts, dim="run", join="outer")


def learning_curves(per_run, folder: Path) -> dict[str, dict[int, list[float]]]:
    """Cell -> epoch -> test accuracies over seeds, every epoch, from each run's committed
    ``metrics.jsonl`` (the analysed checkpoints are only a few of the epochs)."""
    curves: dict[str, dict[int, list[float]]] = {}
    for name, ds in per_run:
        cell = ds.attrs.get("cell", _config(ds)["regime"])
        path = folder / "runs" / f"{name}.metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            value = row.get("test_acc")
            if value is not None and np.isfinite(value):
                curves.setdefault(cell, {}).setdefault(int(row["epoch"]), []).append(float(value))
    return curves


def flat_from(curve: dict[int, list[float]], *, within: float = 0.005) -> int:
    """First epoch from which the mean test accuracy stays within ``within`` of its final value."""
    epochs = sorted(curve)
    means = [np.mean(curve[e]) for e in epochs]
    final = means[-1]
    for i, e in enumerate(epochs):
        if all(abs(m - final) <= within for m in means[i:]):
            return e
    return epochs[-1]


# ----------------------------------------------------------------------------- formatting
def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def fmt_ci(est: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(est):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:+.{digits}f}"
    return f"{est:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def call(est: float, lo: float, hi: float, better: str | None) -> str:
    """Plain words for a difference with its interval, given which way is better."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval (too few seeds)"
    if lo <= 0 <= hi:
        return "not distinguishable from 0"
    up = est > 0
    if better is None:
        return "higher" if up else "lower"
    return "better" if up == (better == "higher") else "worse"


# ----------------------------------------------------------------------------- sections
class Section:
    """One part of the report: a title, a short text, tables and figures."""

    def __init__(self, title: str, text: str = ""):
        self.title, self.text = title, text
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self.figures: list[str] = []

    def table(self, header, rows) -> Section:
        self.tables.append((header, rows))
        return self

    def markdown(self) -> str:
        # A pipe inside a cell ("mean |corr|") would end the cell in markdown.
        def esc(cells):
            return [str(c).replace("|", "\\|") for c in cells]

        parts = [f"## {self.title}", self.text]
        parts += [markdown_table(esc(h), [esc(r) for r in rows]) for h, rows in self.tables]
        parts += [f"![{Path(f).stem}]({f})" for f in self.figures]
        return "\n\n".join(p for p in parts if p)

    def html(self) -> str:
        text = "".join(f"<p>{html.escape(p)}</p>" for p in self.text.split("\n\n") if p)
        tables = "".join(html_table(h, r) for h, r in self.tables)
        figs = "".join(f'<img src="{f}" alt="{Path(f).stem}">' for f in self.figures)
        return f"<h2>{html.escape(self.title)}</h2>{text}{tables}{figs}"


def _save(fig, out: Path, name: str) -> str:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rel = f"figures/{name}.png"
    fig.tight_layout()
    fig.savefig(out / rel, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return rel


def convergence_section(per_run, out: Path) -> Section:
    curves = learning_curves(per_run, out)
    s = Section(
        "Convergence",
        "Test accuracy on the full 10,000-image test set after every epoch, mean over seeds. "
        "'Flat from' is the first epoch from which the mean stays within 0.5 points of its "
        "final value.",
    )
    rows = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for cell, curve in curves.items():
        epochs = sorted(curve)
        means = [np.mean(curve[e]) for e in epochs]
        ax.plot(epochs, np.array(means) * 100, marker=".", label=cell)
        final = curve[epochs[-1]]
        rows.append(
            [
                cell,
                str(len(final)),
                f"{np.mean(final) * 100:.2f}",
                f"{np.min(final) * 100:.2f}-{np.max(final) * 100:.2f}",
                str(flat_from(curve)),
            ]
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    s.table(["cell", "seeds", "final test acc (%)", "range", "flat from epoch"], rows)
    s.figures.append(_save(fig, out, "learning_curves"))
    trials = protocol_trials(out / "protocol")
    if trials:
        s.text += (
            "\n\nHow far these runs are from the model's plateau: the trial runs of `regular` "
            "measured before the study (seed 0, each a cosine schedule over its own length, "
            "`protocol/`; each name gives the trial's lr, weight decay and epochs). The gap "
            "between the study's `regular` and the longest trial at the study's own lr and "
            "weight decay is about how far the study's runs end below the model's plateau."
        )
        s.table(
            ["trial", "epochs", "final test acc (%)", "best test acc (%)"],
            [
                [name, str(e), f"{final * 100:.2f}", f"{best * 100:.2f}"]
                for name, e, final, best in trials
            ],
        )
    return s


def protocol_trials(folder: Path) -> list[tuple[str, int, float, float]]:
    """(name, epochs, final and best test accuracy) of each trial's ``metrics.jsonl``."""
    out = []
    for path in sorted(folder.glob("*.metrics.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        acc = [r["test_acc"] for r in records if "test_acc" in r]
        if acc:
            name = path.name.removesuffix(".metrics.jsonl")
            out.append((name, max(r.get("epoch", 0) for r in records), acc[-1], max(acc)))
    return sorted(out, key=lambda t: (t[1], t[0]))


def contrasts_section(runs) -> tuple[Section, xr.Dataset]:
    metrics = [m for m in (*ACCURACY, *FIDELITY) if m in runs]
    pc = paired_contrasts(runs, metrics)
    s = Section(
        "SaliencyDecor against each baseline (paired by seed)",
        "Difference saliencydecor - baseline of each metric at the final checkpoint, mean of the "
        "per-seed differences with a 95% t-interval over seeds. 'Better' and 'worse' follow each "
        "metric's direction and are said only where the interval excludes 0.",
    )
    rows = []
    for m in metrics:
        for b in pc["baseline"].values:
            r = pc.sel(metric=m, baseline=b)
            est, lo, hi = (float(r[k]) for k in ("estimate", "ci_low", "ci_high"))
            rows.append(
                [
                    label(m),
                    str(b),
                    fmt_ci(est, lo, hi),
                    str(int(r["n_seeds"])),
                    call(est, lo, hi, direction(m)),
                ]
            )
    return s.table(["metric", "baseline", "difference [95% CI]", "seeds", "verdict"], rows), pc


def factorial_section(runs, out: Path) -> tuple[Section, xr.Dataset]:
    metrics = [m for m in (*ACCURACY, *FIDELITY, *GEOMETRY) if m in runs]
    fe = factorial_effects(runs, metrics)
    s = Section(
        "The 2x2 factorial: masking x whitening",
        "Masking off: regular, dbn; on: sgt, saliencydecor. Whitening off: regular, sgt; on: "
        "dbn, saliencydecor. Main effects are the mean over the other factor's levels of "
        "(on - off); the interaction is (saliencydecor - dbn) - (sgt - regular), per seed, with "
        "a 95% t-interval over seeds. The paper's Table III argument (whitening alone is "
        "insufficient; the benefit comes from the combination) is a claim that the interaction "
        "is beneficial.",
    )
    rows = []
    for m in metrics:
        row = [label(m)]
        for e in fe["effect"].values:
            r = fe.sel(metric=m, effect=e)
            est, lo, hi = (float(r[k]) for k in ("estimate", "ci_low", "ci_high"))
            row.append(f"{fmt_ci(est, lo, hi)} ({call(est, lo, hi, direction(m))})")
        rows.append(row)
    s.table(["metric", *map(str, fe["effect"].values)], rows)
    shown = [m for m in ("test_acc", "morf_auc", "fidelity_gap") if m in metrics]
    if shown:
        fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2))
        for ax, m in zip(np.atleast_1d(axes), shown, strict=True):
            for w, regimes in ((0, ("regular", "sgt")), (1, ("dbn", "saliencydecor"))):
                means = [float(fe["cell_mean"].sel(metric=m, regime=r)) for r in regimes]
                lo = [float(fe["cell_ci_low"].sel(metric=m, regime=r)) for r in regimes]
                hi = [float(fe["cell_ci_high"].sel(metric=m, regime=r)) for r in regimes]
                err = np.abs(np.array([np.subtract(means, lo), np.subtract(hi, means)]))
                ax.errorbar(
                    [0, 1],
                    means,
                    yerr=err,
                    marker="o",
                    capsize=3,
                    label="whitening on" if w else "whitening off",
                )
            ax.set_xticks([0, 1], ["masking off", "masking on"])
            ax.set_xlim(-0.35, 1.35)
            ax.set_title(label(m), fontsize=9)
            ax.grid(alpha=0.3)
        np.atleast_1d(axes)[0].legend(fontsize=7)
        s.figures.append(_save(fig, out, "factorial"))
    return s, fe


def dose_section(runs, out: Path) -> tuple[Section, xr.Dataset]:
    metrics = [m for m in (*ACCURACY, *FIDELITY, *GEOMETRY) if m in runs]
    dr = dose_response(runs, metrics)
    s = Section(
        "Dose-response: saliencydecor's decorrelation weight lambda",
        "Slope of each metric per decade of lambda (lambda > 0), fitted per seed and summarised "
        "by a 95% t-interval over seeds; the contrast of the largest lambda against lambda = 0; "
        "and Spearman over all runs (lambda = 0 included). This is the intervention the "
        "observational link lacks: only lambda changes between these runs.",
    )
    rows = []
    for m in metrics:
        r = dr.sel(metric=m)
        rows.append(
            [
                label(m),
                fmt_ci(*(float(r[k]) for k in ("slope", "slope_ci_low", "slope_ci_high")), 4),
                fmt_ci(
                    *(float(r[k]) for k in ("contrast", "contrast_ci_low", "contrast_ci_high")), 4
                ),
                f"{fmt(float(r['spearman']), 2)} (p={fmt(float(r['spearman_p_value']), 3)})",
                str(int(r["slope_n_seeds"])),
            ]
        )
    s.table(
        ["metric", "slope per decade [95% CI]", "lambda max - lambda 0", "Spearman", "seeds"], rows
    )
    shown = [
        m
        for m in (
            "mean_abs_corr",
            "effective_rank",
            "entanglement",
            "morf_auc",
            "fidelity_gap",
            "test_acc",
        )
        if m in metrics
    ]
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    doses = dr["dose"].values
    x = np.arange(len(doses))
    for ax, m in zip(axes.ravel(), shown, strict=False):
        mean = dr["dose_mean"].sel(metric=m).values
        lo = dr["dose_ci_low"].sel(metric=m).values
        hi = dr["dose_ci_high"].sel(metric=m).values
        ax.errorbar(x, mean, yerr=np.abs([mean - lo, hi - mean]), marker="o", capsize=3)
        ax.set_xticks(x, [f"{d:g}" for d in doses])
        ax.set_xlabel("lambda")
        ax.set_title(label(m), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    s.figures.append(_save(fig, out, "dose_response"))
    return s, dr


def _under_control(ctrl: xr.Dataset, metric: str) -> str:
    """Whether a geometry metric stayed put under the function-preserving control."""
    if not ctrl.data_vars or metric not in set(map(str, ctrl["metric"].values)):
        return "not tested"
    return "invariant" if bool(ctrl["invariant"].sel(metric=metric).all()) else "moved"


def link_section(runs, out: Path, ctrl: xr.Dataset) -> tuple[Section, xr.Dataset]:
    geometry = [m for m in (*GEOMETRY, *DYNAMICS) if m in runs and np.isfinite(runs[m]).sum() > 3]
    fidelity = [m for m in FIDELITY if m in runs and np.isfinite(runs[m]).sum() > 3]
    link = run_link(runs, geometry, fidelity, control="test_acc", n_boot=2000, seed=0)
    s = Section(
        "Which geometry tracks fidelity across runs, once accuracy is controlled",
        "The unit is a run (its final checkpoint), over every run of the factorial and the "
        "dose-response. Spearman correlation, and partial Spearman given test accuracy (a "
        "better-trained model may be both more decorrelated and more faithful); 95% intervals "
        "from a bootstrap over runs; q = Benjamini-Hochberg over the whole grid. Shown: every "
        "pair, q < 0.05 marked with *. 'Under the control': whether the geometry metric stays "
        "the same when the feature layer is reparametrised without changing the function (below).",
    )
    rows = []
    for g in geometry:
        for f in fidelity:
            r = link.sel(geometry=g, fidelity=f)
            q = float(r["partial_q_value"])
            rows.append(
                [
                    label(g),
                    _under_control(ctrl, g),
                    label(f),
                    fmt_ci(
                        *(float(r[k]) for k in ("spearman", "spearman_ci_low", "spearman_ci_high")),
                        2,
                    ),
                    fmt_ci(
                        *(
                            float(r[k])
                            for k in ("partial_spearman", "partial_ci_low", "partial_ci_high")
                        ),
                        2,
                    ),
                    fmt(q, 3) + (" *" if q < 0.05 else ""),
                    str(int(r["n_runs"])),
                ]
            )
    s.table(
        [
            "geometry",
            "under the control",
            "fidelity",
            "Spearman [95% CI]",
            "partial | accuracy",
            "q (partial)",
            "runs",
        ],
        rows,
    )
    fig, ax = plt.subplots(figsize=(1.2 * len(fidelity) + 2, 0.5 * len(geometry) + 1.5))
    values = link["partial_spearman"].sel(geometry=geometry, fidelity=fidelity).values
    im = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    q = link["partial_q_value"].sel(geometry=geometry, fidelity=fidelity).values
    for i in range(len(geometry)):
        for j in range(len(fidelity)):
            if np.isfinite(values[i, j]):
                star = "*" if q[i, j] < 0.05 else ""
                ax.text(j, i, f"{values[i, j]:.2f}{star}", ha="center", va="center", fontsize=7)
    ax.set_xticks(
        range(len(fidelity)), [label(f) for f in fidelity], rotation=40, ha="right", fontsize=7
    )
    ax.set_yticks(range(len(geometry)), [label(g) for g in geometry], fontsize=7)
    ax.set_title("partial Spearman given test accuracy (* q < 0.05)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    s.figures.append(_save(fig, out, "run_link"))
    return s, link


def within_section(per_epoch) -> Section:
    geometry = [m for m in GEOMETRY if m in per_epoch]
    fidelity = [m for m in FIDELITY if m in per_epoch]
    w = within_run_link(per_epoch, geometry, fidelity, min_epoch=1, n_boot=1000, seed=0)
    s = Section(
        "Over epochs, within each run (confounded by training progress)",
        "Spearman over the epochs of each run, then the median over runs with a bootstrap "
        "interval. " + str(w.attrs.get("interpretation", "")),
    )
    rows = []
    for g in geometry:
        for f in fidelity:
            r = w.sel(geometry=g, fidelity=f)
            rows.append(
                [
                    label(g),
                    label(f),
                    fmt_ci(
                        *(
                            float(r[k])
                            for k in ("median_spearman", "median_ci_low", "median_ci_high")
                        ),
                        2,
                    ),
                    str(int(r["n_runs"])),
                ]
            )
    return s.table(["geometry", "fidelity", "median within-run Spearman", "runs"], rows)


def control_table(per_run) -> xr.Dataset:
    """Per run and metric: relative change under the control, and whether it is invariant."""
    rel, inv, logit, sal = [], [], [], []
    names = None
    for _, ds in per_run:
        if "control_relative_change" not in ds:
            continue
        names = [str(m) for m in ds["control_metric"].values]
        rel.append(ds["control_relative_change"].values.astype(float))
        inv.append(ds["control_invariant"].values.astype(bool))
        logit.append(float(ds["control_logit_max_rel_diff"]))
        sal.append(float(ds["control_saliency_max_rel_diff"]))
    if names is None:
        return xr.Dataset()
    return xr.Dataset(
        {
            "relative_change": (("run", "metric"), np.array(rel)),
            "invariant": (("run", "metric"), np.array(inv)),
            "logit_max_rel_diff": ("run", np.array(logit)),
            "saliency_max_rel_diff": ("run", np.array(sal)),
        },
        coords={"metric": names},
    )


def control_section(ctrl: xr.Dataset) -> Section:
    s = Section(
        "The reparametrisation control",
        "On each run's final checkpoint, the eval-mode ZCA whitening of the feature layer is "
        "inserted after it and its inverse folded into the linear head "
        "(geomxai.study.reparametrization_control). The network computes the same function, so "
        "every input-gradient saliency map and every fidelity metric is unchanged, while the "
        "geometry of the feature layer is not. A geometry metric that this function-preserving "
        "change moves cannot be what saliency reads: whatever link it has with fidelity is "
        "indirect (through training), not an explanation through the function.",
    )
    if not ctrl.data_vars:
        return s
    s.text += (
        f"\n\nAcross {ctrl.sizes['run']} runs the largest relative change of the logits was "
        f"{float(ctrl['logit_max_rel_diff'].max()):.1e} and of the saliency maps "
        f"{float(ctrl['saliency_max_rel_diff'].max()):.1e}."
    )
    rows = []
    for m in ctrl["metric"].values:
        change = ctrl["relative_change"].sel(metric=m).values
        invariant = ctrl["invariant"].sel(metric=m).values
        rows.append(
            [
                label(str(m)),
                f"{np.nanmedian(np.abs(change)):.3g}",
                f"{int(invariant.sum())}/{invariant.size}",
                "invariant" if invariant.all() else "moved by a function-preserving change",
            ]
        )
    return s.table(
        ["metric", "median |relative change|", "runs invariant", "under the control"], rows
    )


def power_section(runs) -> tuple[Section, xr.Dataset]:
    metrics = [m for m in (*ACCURACY, "morf_auc", "fidelity_gap") if m in runs]
    contrasts = ["saliencydecor-regular", "saliencydecor-sgt", "saliencydecor-dbn", "interaction"]
    pw = power_analysis(runs, metrics, contrasts)
    s = Section(
        "Power",
        "For each paired contrast: the smallest difference the seed count detects (two-sided "
        "paired t-test, alpha 0.05, power 0.8, from the observed SD of the per-seed "
        "differences), and the seeds that the paper's stated difference would need.",
    )
    rows = []
    for m in metrics:
        for c in pw["contrast"].values:
            r = pw.sel(metric=m, contrast=c)
            rows.append(
                [
                    label(m),
                    str(c),
                    str(int(r["n_seeds"])),
                    fmt(float(r["sd_difference"]), 4),
                    fmt(float(r["detectable_difference"]), 4),
                    fmt(float(r["stated_difference"]), 4),
                    fmt(float(r["seeds_needed"]), 1),
                ]
            )
    return s.table(
        [
            "metric",
            "contrast",
            "seeds",
            "SD of differences",
            "detectable difference",
            "paper's difference",
            "seeds needed",
        ],
        rows,
    ), pw


# ----------------------------------------------------------------------------- verdicts
def _say(est, lo, hi, better, digits=3) -> str:
    return f"{call(est, lo, hi, better)} ({fmt_ci(est, lo, hi, digits)})"


def verdicts(runs, pc, fe, dr, link, ctrl) -> Section:
    s = Section(
        "Verdict",
        "Each answer with its 95% interval; 'not distinguishable' means the "
        "interval contains 0 at this seed count (see Power for what it could detect).",
    )
    rows = []
    fidelity = [
        m
        for m in (
            "morf_auc",
            "fidelity_gap",
            "deletion_auc",
            "insertion_auc",
            "topq_contrast",
            "gini",
        )
        if m in pc["metric"]
    ]
    for b in pc["baseline"].values:
        parts = []
        for m in fidelity:
            r = pc.sel(metric=m, baseline=b)
            parts.append(
                f"{label(m)}: "
                + _say(*(float(r[k]) for k in ("estimate", "ci_low", "ci_high")), direction(m))
            )
        rows.append([f"Does SaliencyDecor improve fidelity over {b}?", "; ".join(parts)])
    parts = []
    for m in [m for m in ("test_acc", "morf_auc", "fidelity_gap") if m in fe["metric"]]:
        r = fe.sel(metric=m, effect="interaction")
        w = fe.sel(metric=m, effect="whitening")
        parts.append(
            f"{label(m)}: interaction "
            + _say(*(float(r[k]) for k in ("estimate", "ci_low", "ci_high")), direction(m))
            + ", whitening main effect "
            + _say(*(float(w[k]) for k in ("estimate", "ci_low", "ci_high")), direction(m))
        )
    rows.append(
        [
            "Is the benefit an interaction of masking and whitening (paper, Table III)?",
            "; ".join(parts),
        ]
    )
    parts = []
    for m in [
        m for m in ("mean_abs_corr", "morf_auc", "fidelity_gap", "test_acc") if m in dr["metric"]
    ]:
        r = dr.sel(metric=m)
        parts.append(
            f"{label(m)} per decade of lambda: "
            + _say(
                *(float(r[k]) for k in ("slope", "slope_ci_low", "slope_ci_high")), direction(m), 4
            )
        )
    rows.append(["Does decorrelation strength move fidelity (dose-response)?", "; ".join(parts)])
    tracked = []
    for g in link["geometry"].values:
        for f in link["fidelity"].values:
            r = link.sel(geometry=g, fidelity=f)
            if float(r["partial_q_value"]) < 0.05:
                tracked.append((str(g), str(f), float(r["partial_spearman"])))
    rows.append(
        [
            "Which geometry metrics track fidelity across runs once accuracy is controlled?",
            "; ".join(f"{label(g)} ~ {label(f)} (partial rho {r:+.2f})" for g, f, r in tracked)
            or "none at q < 0.05",
        ]
    )
    if ctrl.data_vars:
        invariant = {
            str(m) for m in ctrl["metric"].values if bool(ctrl["invariant"].sel(metric=m).all())
        }
        moved = sorted(
            {g for g, _, _ in tracked if g in set(map(str, ctrl["metric"].values)) - invariant}
        )
        kept = sorted({g for g, _, _ in tracked if g in invariant})
        untested = sorted({g for g, _, _ in tracked} - set(map(str, ctrl["metric"].values)))
        text = (
            (
                f"moved by the function-preserving control, so at best indirect: {', '.join(map(label, moved))}. "
                if moved
                else ""
            )
            + (f"invariant under it: {', '.join(map(label, kept))}. " if kept else "")
            + (
                f"not covered by the control: {', '.join(map(label, untested))}."
                if untested
                else ""
            )
        ) or "no tracked metric to test"
        rows.append(["Which of those survive the reparametrisation control?", text])
    return s.table(["question", "answer"], rows)


# ----------------------------------------------------------------------------- build
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}img{max-width:100%}"
)


def build(
    folder: Path,
    per_run: list[tuple[str, xr.Dataset]],
    *,
    header: str,
    planned: dict[str, int],
    dataset: str,
) -> dict[str, xr.Dataset]:
    """Write ``tables.md``, ``index.html`` and ``figures/`` into ``folder`` from the per-run
    results (:func:`load_runs`); return the stats."""
    if not per_run:
        raise FileNotFoundError(
            f"no per-run results under {str(folder / 'runs')!r}; run the analyse stage"
        )
    runs = runs_table(per_run)
    done: dict[str, int] = {}
    for _, ds in per_run:
        done[ds.attrs.get("cell", "?")] = done.get(ds.attrs.get("cell", "?"), 0) + 1
    status = Section(
        "What this report rests on",
        header
        + "\n\n"
        + (
            "All planned runs are analysed."
            if all(done.get(c, 0) >= n for c, n in planned.items())
            else "The study is NOT complete: some planned runs are not analysed yet, so "
            "the intervals below are wider than the final ones will be."
        ),
    ).table(
        ["cell", "runs analysed", "planned"],
        [[c, str(done.get(c, 0)), str(n)] for c, n in planned.items()],
    )
    sections = [status, convergence_section(per_run, folder)]
    stats: dict[str, xr.Dataset] = {"runs": runs}
    s, stats["contrasts"] = contrasts_section(runs)
    sections.append(s)
    s, stats["factorial"] = factorial_section(runs, folder)
    sections.append(s)
    s, stats["dose"] = dose_section(runs, folder)
    sections.append(s)
    stats["control"] = control_table(per_run)
    s, stats["link"] = link_section(runs, folder, stats["control"])
    sections.append(s)
    sections.append(within_section(per_epoch_table(per_run)))
    sections.append(control_section(stats["control"]))
    s, stats["power"] = power_section(runs)
    sections.append(s)
    sections.insert(
        1,
        verdicts(
            runs,
            stats["contrasts"],
            stats["factorial"],
            stats["dose"],
            stats["link"],
            stats["control"],
        ),
    )
    title = (
        "Does representation geometry explain gradient-saliency quality? Fashion-MNIST, converged"
    )
    (folder / "tables.md").write_text(
        f"# {title}\n\n" + "\n\n".join(s.markdown() for s in sections) + "\n"
    )
    body = "".join(s.html() for s in sections)
    (folder / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
    return stats

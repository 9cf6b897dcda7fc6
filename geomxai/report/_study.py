"""The sections of a study's report: rendered from its ``results.nc`` alone.

Every number on the page was computed by the statistics stage (:mod:`geomxai.pipeline`) and
every sentence about the setting (dataset, image counts, model, epochs, probe) is generated
from the design and the runs' recorded training configs in the results' attrs. Nothing here
computes a statistic; a section whose variables are absent is left out. Each section renders to
HTML and to markdown (``tables.md``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from geomxai import schema, stats
from geomxai._finite import DEAD_UNIT_TOL
from geomxai.report._style import new_figure, plain, save
from geomxai.schema import VERDICT_QUESTIONS as VERDICT

RESULTS_SCHEMA_VERSION = schema.SCHEMA_VERSION
"""The layout of a study's results file this renderer reads (``attrs["schema_version"]``)."""


class ResultsVersionError(ValueError):
    """A results file of another layout than the renderer reads; the message names both."""


STUDY_FIX = "geomxai study DESIGN.toml --stage statistics rebuilds a study's results"
"""How a study's results of an older layout are rebuilt (from its per-run results)."""


def check_schema_version(results: xr.Dataset, *, where: str = "results", fix: str = STUDY_FIX):
    """Refuse results of another layout than :data:`geomxai.schema.SCHEMA_VERSION`, naming its
    version and the fix (a report of them would silently lack sections).

    Results without ``schema_version`` were written before layouts were numbered: layout 1. An
    older layout raises :class:`ResultsVersionError`; an unreadable or newer one a ValueError
    (upgrade geomxai for a newer one). ``fix`` says how to rebuild older results.
    """
    version = results.attrs.get("schema_version")
    unnumbered = version is None
    try:
        number = 1 if unnumbered else int(version)
    except (TypeError, ValueError):
        raise ValueError(
            f"{where} has an unreadable schema_version {version!r}; rebuild it with this "
            f"geomxai: {fix}"
        ) from None
    if number < RESULTS_SCHEMA_VERSION:
        raise ResultsVersionError(
            f"{where} has results layout {number}"
            + (" (no schema_version)" if unnumbered else "")
            + f", written by an older geomxai; this one reads layout {RESULTS_SCHEMA_VERSION}: "
            f"rebuild it with this version: {fix}"
        )
    if number > RESULTS_SCHEMA_VERSION:
        raise ValueError(
            f"{where} has results layout {number}, newer than the {RESULTS_SCHEMA_VERSION} this "
            "geomxai reads: upgrade geomxai (pip install -U geomxai)"
        )


# -- formatting ----------------------------------------------------------------------------------


def label(name: str) -> str:
    try:
        return schema.label(name)
    except (KeyError, ValueError):
        return name


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def count(value: float) -> str:
    return "n/a" if not np.isfinite(value) else str(int(value))


def fmt_ci(est: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(est):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:+.{digits}f}"
    return f"{est:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _table_html(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table_md(header, rows) -> str:
    def esc(cells):
        return [str(c).replace("|", "\\|") for c in cells]

    lines = ["| " + " | ".join(esc(header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(r)) + " |" for r in rows]
    return "\n".join(lines)


@dataclass
class Section:
    """One part of the page: a title, paragraphs, bullet lists (each after its lead-in line),
    tables (with captions) and figures."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    lists: list[tuple[str, list[str]]] = field(default_factory=list)

    def table(self, header, rows, caption: str = "") -> Section:
        self.tables.append((caption, header, rows))
        return self

    def bullets(self, lead: str, items: list[str]) -> Section:
        self.lists.append((lead, list(items)))
        return self

    def html(self) -> str:
        parts = [f"<h2>{html.escape(self.title)}</h2>"]
        parts += [f"<p>{html.escape(p)}</p>" for p in self.text if p]
        for lead, items in self.lists:
            parts.append(f"<p>{html.escape(lead)}</p>")
            if items:
                parts.append(
                    "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"
                )
        for caption, header, rows in self.tables:
            if caption:
                parts.append(f"<p class='caption'>{html.escape(caption)}</p>")
            parts.append(_table_html(header, rows))
        parts += [f"<img src='{f}' alt='{html.escape(Path(f).stem)}'>" for f in self.figures]
        return "".join(parts)

    def markdown(self) -> str:
        parts = [f"## {self.title}", *[p for p in self.text if p]]
        for lead, items in self.lists:
            parts.append(lead)
            if items:
                parts.append("\n".join(f"- {i}" for i in items))
        for caption, header, rows in self.tables:
            if caption:
                parts.append(f"*{caption}*")
            parts.append(_table_md(header, rows))
        parts += [f"![{Path(f).stem}]({f})" for f in self.figures]
        return "\n\n".join(parts)


@dataclass(frozen=True)
class StudyPage:
    """What every section reads: the results, the design, and where figures go."""

    ds: xr.Dataset
    out_dir: Path
    design: dict
    configs: dict

    @classmethod
    def of(cls, ds: xr.Dataset, out_dir: Path) -> StudyPage:
        design = json.loads(ds.attrs.get("design", "{}"))
        configs = json.loads(ds.attrs.get("run_configs", "{}"))
        return cls(ds, Path(out_dir), design, configs)

    def has(self, *names: str) -> bool:
        return all(n in self.ds for n in names)

    def figure(self, fig, name: str) -> str:
        (self.out_dir / "figures").mkdir(parents=True, exist_ok=True)
        save(fig, self.out_dir / "figures" / f"{name}.png")
        return f"figures/{name}.png"

    def family_caption(self, prefix: str, what: str) -> str:
        a = self.ds.attrs
        fam = a.get(f"{prefix}family", "")
        corr = a.get(f"{prefix}correction", "")
        alpha = self.design.get("statistics", {}).get("alpha", 0.05)
        return (
            f"Family: {what} ({fam}). Correction: {corr}; a difference is called better or worse "
            f"only where its adjusted p-value is below {alpha:g}. Intervals are the per-claim "
            f"{self.confidence:.0%} intervals."
        )

    def grid_correction(self, prefix: str) -> str:
        """How a link grid's q-values were corrected (older results: always BH)."""
        return stats.CORRECTION_LABELS[self.ds.attrs.get(f"{prefix}correction", "bh")]

    @property
    def confidence(self) -> float:
        return float(self.design.get("statistics", {}).get("confidence", 0.95))

    def value(self, name: str, **sel) -> float:
        return float(self.ds[name].sel(**sel))


# -- the setting, generated ------------------------------------------------------------------------


def _common(configs: dict, key: str):
    values = {json.dumps(c.get(key), sort_keys=True) for c in configs.values()}
    return json.loads(values.pop()) if len(values) == 1 else None


def _unit(page: StudyPage) -> str:
    """What a sample of the study's data is called: a row of a table, else an image."""
    from geomxai.data import TABLES

    return "rows" if _common(page.configs, "dataset") in TABLES else "images"


def _counts(page: StudyPage) -> tuple[set[int], set[int]]:
    """The training and test sample counts the runs recorded (0: not counted where built)."""
    counts = json.loads(page.ds.attrs.get("run_images", "{}"))
    return {v[0] for v in counts.values() if v[0]}, {v[1] for v in counts.values() if v[1]}


def _images(page: StudyPage) -> tuple[str, str]:
    train, test = _counts(page)
    unit = _unit(page)

    def say(values, what):
        if len(values) == 1:
            return f"{values.pop():,} {what} {unit}"
        if values:
            return f"{min(values):,}-{max(values):,} {what} {unit} (varies by run)"
        return f"{what} {unit} (count not recorded)"

    return say(train, "training"), say(test, "test")


def _probe_text(page: StudyPage, probe, dataset: str) -> str:
    """Which samples the probe is: the design's first ``probe``, or the whole test split where
    that is smaller."""
    unit = _unit(page)
    _, tests = _counts(page)
    if isinstance(probe, int) and len(tests) == 1 and min(tests) < probe:
        return (
            f"all {min(tests):,} test {unit} of {dataset}, the whole test split (the design "
            f"asks for {probe:,}),"
        )
    return f"the first {probe} test {unit} of {dataset}"


def setting_text(page: StudyPage) -> str:
    """One paragraph on what was trained and measured, from the design and the run configs."""
    c = page.configs
    dataset = _common(c, "dataset") or "several datasets"
    model = _common(c, "model") or "several models"
    epochs = _common(c, "epochs")
    train_text, test_text = _images(page)
    parts = [
        f"Data: {dataset}; {train_text} for training, {test_text} for test accuracy.",
        f"Model: {model}; "
        + (f"{epochs} epochs" if epochs is not None else "epochs vary by cell")
        + (
            f", SGD momentum {_common(c, 'momentum')}, lr {_common(c, 'lr')} with cosine "
            f"annealing, weight decay {_common(c, 'weight_decay')}, batch {_common(c, 'batch_size')}."
        ),
    ]
    method = {
        k: _common(c, k)
        for k in ("mask_ratio", "kl_weight", "decor_weight", "group_size", "mask_gradient_mode")
    }
    said = [f"{k} {v}" for k, v in method.items() if v is not None]
    if said:
        parts.append("Method fields common to every run: " + ", ".join(said) + ".")
    d = page.design
    cells = d.get("cells", [])
    if cells:
        parts.append(
            "Cells: "
            + "; ".join(
                f"{x['name']} ({', '.join(f'{k}={v}' for k, v in x['overrides'].items())})"
                for x in cells
            )
            + f". Seeds {d.get('seeds')} (seed s = the same initialisation and data order in every cell)."
        )
    analysis = d.get("analysis", {})
    probe = d.get("probe_size", analysis.get("probe_size"))
    methods = analysis.get("saliency_methods") or [analysis.get("saliency_method", "abs_gradient")]
    fills = analysis.get("fills") or [analysis.get("fill", "uniform")]
    parts.append(
        f"Geometry and saliency on {_probe_text(page, probe, dataset)} "
        f"({' and '.join(map(schema.display, methods))} saliency; masking with "
        f"{' and '.join(map(schema.display, fills))}); checkpoints analysed: "
        f"{d.get('checkpoints', 'all')}."
    )
    if page.ds.attrs.get("note"):
        parts.append(f"Note: {page.ds.attrs['note']}")
    return " ".join(parts)


def status_section(page: StudyPage) -> Section:
    d = page.design
    cells = [c["name"] for c in d.get("cells", [])]
    done: dict[str, int] = {}
    if "cell" in page.ds.coords:
        for c in page.ds["cell"].values:
            done[str(c)] = done.get(str(c), 0) + 1
    planned = len(d.get("seeds", []))
    complete = all(done.get(c, 0) >= planned for c in cells)
    s = Section("What this report rests on", [setting_text(page)])
    s.text.append(
        "All planned runs are analysed."
        if complete
        else "The study is NOT complete: some planned runs are not analysed yet, so the intervals "
        "below are wider than the final ones will be."
    )
    wall = json.loads(page.ds.attrs.get("wall_time", "{}") or "{}")
    if wall:
        s.text.append(
            "Compute: "
            + ", ".join(f"{k.removesuffix('_s')} {v / 3600:.2f} h" for k, v in wall.items() if v)
            + f" ({page.ds.attrs.get('hardware', 'hardware not recorded')})."
        )
    s.table(
        ["cell", "runs analysed", "planned"],
        [[c, str(done.get(c, 0)), str(planned)] for c in cells],
    )
    return s


# -- the families --------------------------------------------------------------------------------


def _say(
    page, prefix, sel, est="estimate", lo="ci_low", hi="ci_high", verdict="verdict", digits=3
) -> str:
    v = [page.value(f"{prefix}{k}", **sel) for k in (est, lo, hi)]
    word = str(page.ds[f"{prefix}{verdict}"].sel(**sel).values)
    return f"{word} ({fmt_ci(*v, digits)})"


def contrasts_section(page: StudyPage) -> Section | None:
    if not page.has("contrasts_estimate"):
        return None
    d = page.design["statistics"]
    ds = page.ds
    s = Section(
        f"{d['treatment']} against each baseline (paired by seed)",
        [
            f"Difference {d['treatment']} - baseline of each metric at the final checkpoint: the "
            "mean of the per-seed differences with its t-interval over seeds."
        ],
    )
    rows = []
    for m in ds["contrasts_estimate"].dropna("metric", how="all")["metric"].values:
        for b in ds["baseline"].values:
            sel = {"metric": m, "baseline": b}
            rows.append(
                [
                    label(str(m)),
                    str(b),
                    fmt_ci(
                        *(
                            page.value(f"contrasts_{k}", **sel)
                            for k in ("estimate", "ci_low", "ci_high")
                        )
                    ),
                    fmt(page.value("contrasts_q_value", **sel), 3),
                    count(page.value("contrasts_n_seeds", **sel)),
                    str(ds["contrasts_verdict"].sel(**sel).values),
                ]
            )
    caption = page.family_caption("contrasts_", "every metric against every baseline")
    return s.table(
        ["metric", "baseline", f"difference [{page.confidence:.0%} CI]", "q", "seeds", "verdict"],
        rows,
        caption,
    )


def factorial_section(page: StudyPage) -> Section | None:
    if not page.has("factorial_estimate"):
        return None
    ds = page.ds
    f = page.design["statistics"]["factorial"]
    s = Section(
        "The 2x2 factorial: masking x whitening",
        [
            f"Masking off: {f['regular']}, {f['dbn']}; on: {f['sgt']}, {f['saliencydecor']}. "
            f"Whitening off: {f['regular']}, {f['sgt']}; on: {f['dbn']}, {f['saliencydecor']}. "
            "Main effects are the mean over the other factor's levels of (on - off); the "
            "interaction is (masking and whitening - whitening) - (masking - neither), per seed, "
            "with a t-interval over seeds. The paper's Table III argument (whitening alone is "
            "insufficient; the benefit comes from the combination) is a claim that the "
            "interaction is beneficial."
        ],
    )
    metrics = ds["factorial_estimate"].dropna("metric", how="all")["metric"].values
    rows = []
    for m in metrics:
        row = [label(str(m))]
        for e in ds["effect"].values:
            row.append(_say(page, "factorial_", {"metric": m, "effect": e}))
        rows.append(row)
    s.table(
        ["metric", *map(str, ds["effect"].values)],
        rows,
        page.family_caption("factorial_", "every effect of every metric"),
    )
    shown = _first_variants(("test_acc", "morf_auc", "fidelity_gap"), metrics)
    if shown and "factorial_cell_mean" in ds:
        fig, axes = new_figure(4 * len(shown), 3.2, ncols=len(shown))
        for ax, m in zip(np.atleast_1d(axes), shown, strict=True):
            for w, cells in ((0, ("regular", "sgt")), (1, ("dbn", "saliencydecor"))):
                means = [
                    page.value("factorial_cell_mean", metric=m, factorial_cell=c) for c in cells
                ]
                lo = [
                    page.value("factorial_cell_ci_low", metric=m, factorial_cell=c) for c in cells
                ]
                hi = [
                    page.value("factorial_cell_ci_high", metric=m, factorial_cell=c) for c in cells
                ]
                err = np.abs(np.array([np.subtract(means, lo), np.subtract(hi, means)]))
                ax.errorbar(
                    [0, 1],
                    means,
                    yerr=np.nan_to_num(err),
                    marker="o",
                    capsize=3,
                    label="whitening on" if w else "whitening off",
                )
            ax.set_xticks([0, 1], ["masking off", "masking on"])
            ax.set_xlim(-0.35, 1.35)
            ax.set_title(plain(label(m)), fontsize=9)
            ax.grid(alpha=0.3)
        np.atleast_1d(axes)[0].legend(fontsize=7)
        s.figures.append(page.figure(fig, "factorial"))
    return s


def _dose_prefixes(ds: xr.Dataset) -> list[tuple[str, str]]:
    out = []
    for i in range(16):
        prefix = "dose_" if i == 0 else f"dose{i}_"
        dim = "dose" if i == 0 else f"dose{i}"
        if f"{prefix}slope" in ds:
            out.append((prefix, dim))
    return out


def dose_sections(page: StudyPage) -> list[Section]:
    ds = page.ds
    out = []
    for prefix, dim in _dose_prefixes(ds):
        field_ = ds.attrs.get(f"{prefix}field", "dose")
        s = Section(
            f"Dose-response: {field_}",
            [
                f"Slope of each metric per decade of {field_} ({field_} > 0), fitted per seed and "
                "summarised by a t-interval over seeds; the contrast of the largest value against "
                f"{field_} = 0; and Spearman over all runs of the series. Only {field_} changes "
                "between these runs: this is the intervention the observational link lacks."
            ],
        )
        metrics = ds[f"{prefix}slope"].dropna("metric", how="all")["metric"].values
        rows = []
        for m in metrics:
            sel = {"metric": m}
            rows.append(
                [
                    label(str(m)),
                    _say(
                        page,
                        prefix,
                        sel,
                        "slope",
                        "slope_ci_low",
                        "slope_ci_high",
                        "slope_verdict",
                        4,
                    ),
                    fmt(page.value(f"{prefix}slope_q_value", **sel), 3),
                    fmt_ci(
                        *(
                            page.value(f"{prefix}{k}", **sel)
                            for k in ("contrast", "contrast_ci_low", "contrast_ci_high")
                        ),
                        4,
                    ),
                    f"{fmt(page.value(f'{prefix}spearman', **sel), 2)} (p={fmt(page.value(f'{prefix}spearman_p_value', **sel), 3)})",
                    count(page.value(f"{prefix}slope_n_seeds", **sel)),
                ]
            )
        s.table(
            ["metric", "slope per decade: verdict [CI]", "q", "largest - 0", "Spearman", "seeds"],
            rows,
            page.family_caption(f"{prefix}slope_", f"the slopes of every metric along {field_}"),
        )
        shown = _first_variants(
            (
                "mean_abs_corr",
                "effective_rank",
                "entanglement",
                "morf_auc",
                "fidelity_gap",
                "test_acc",
            ),
            metrics,
        )
        if shown and f"{prefix}dose_mean" in ds:
            fig, axes = new_figure(11, 6, nrows=2, ncols=3)
            doses = ds[dim].values
            x = np.arange(len(doses))
            for ax, m in zip(np.ravel(axes), shown, strict=False):
                mean = ds[f"{prefix}dose_mean"].sel(metric=m).values
                lo = ds[f"{prefix}dose_ci_low"].sel(metric=m).values
                hi = ds[f"{prefix}dose_ci_high"].sel(metric=m).values
                ax.errorbar(
                    x,
                    mean,
                    yerr=np.nan_to_num(np.abs([mean - lo, hi - mean])),
                    marker="o",
                    capsize=3,
                )
                ax.set_xticks(x, [f"{d:g}" for d in doses])
                ax.set_xlabel(plain(field_))
                ax.set_title(plain(label(str(m))), fontsize=9)
                ax.grid(alpha=0.3)
            for ax in np.ravel(axes)[len(shown) :]:
                ax.axis("off")
            s.figures.append(
                page.figure(
                    fig, "dose_response" if prefix == "dose_" else f"dose_response_{field_}"
                )
            )
        out.append(s)
    return out


def _link_rows(page: StudyPage, prefix: str, *, with_control: bool) -> list[list[str]]:
    ds = page.ds
    rows = []
    for g in ds[f"{prefix}spearman"]["geometry"].values:
        for f in ds[f"{prefix}spearman"]["fidelity"].values:
            sel = {"geometry": g, "fidelity": f}
            if not np.isfinite(page.value(f"{prefix}n_runs", **sel)):
                continue
            q = page.value(f"{prefix}partial_q_value", **sel)
            row = [label(str(g))]
            if with_control:
                row.append(stats.control_word(ds, str(g)))
            row += [
                label(str(f)),
                fmt_ci(
                    *(
                        page.value(f"{prefix}{k}", **sel)
                        for k in ("spearman", "spearman_ci_low", "spearman_ci_high")
                    ),
                    2,
                ),
                fmt_ci(
                    *(
                        page.value(f"{prefix}{k}", **sel)
                        for k in ("partial_spearman", "partial_ci_low", "partial_ci_high")
                    ),
                    2,
                ),
                fmt(q, 3) + (" *" if q < stats.results_alpha(ds) else ""),
                count(page.value(f"{prefix}n_runs", **sel)),
            ]
            rows.append(row)
    return rows


def link_section(page: StudyPage) -> Section | None:
    ds = page.ds
    if not page.has("link_spearman"):
        return None
    corr = page.grid_correction("link_")
    s = Section(
        "Which geometry tracks fidelity across runs, once accuracy is controlled",
        [
            "The unit is a run (its final checkpoint, and whole-run summaries of its dynamics), "
            "over every run of the design. Spearman correlation, and partial Spearman given test "
            "accuracy (a better-trained model may be both more decorrelated and more faithful); "
            f"{page.confidence:.0%} intervals from a bootstrap over runs; q = {corr} "
            "over the whole grid, * where q is below the design's alpha. 'Under the control': "
            "whether the geometry metric stays the same when the feature layer is reparametrised "
            "without changing the function. Pooled over cells, this correlation mostly reflects "
            "differences between cells; the within-cell link below asks the question inside them."
        ],
    )
    s.table(
        [
            "geometry",
            "under the control",
            "fidelity",
            f"Spearman [{page.confidence:.0%} CI]",
            "partial | accuracy",
            "q (partial)",
            "runs",
        ],
        _link_rows(page, "link_", with_control=True),
        f"Family: the grid of {ds['link_spearman'].size} geometry x fidelity pairs. "
        f"Correction: {corr} over the grid.",
    )
    geometry = list(map(str, ds["link_spearman"]["geometry"].values))
    fidelity = list(map(str, ds["link_spearman"]["fidelity"].values))
    fig, ax = new_figure(1.2 * len(fidelity) + 2, 0.5 * len(geometry) + 1.5)
    values = ds["link_partial_spearman"].values
    q = ds["link_partial_q_value"].values
    im = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(geometry)):
        for j in range(len(fidelity)):
            if np.isfinite(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}{'*' if q[i, j] < 0.05 else ''}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
    ax.set_xticks(
        range(len(fidelity)),
        [plain(label(f)) for f in fidelity],
        rotation=40,
        ha="right",
        fontsize=7,
    )
    ax.set_yticks(range(len(geometry)), [plain(label(g)) for g in geometry], fontsize=7)
    ax.set_title("partial Spearman given test accuracy (* q < 0.05)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    s.figures.append(page.figure(fig, "run_link"))
    return s


def within_cell_section(page: StudyPage) -> Section | None:
    if not page.has("within_cell_spearman"):
        return None
    ds = page.ds
    if not (ds["within_cell_n_cells"] > 0).any():
        return Section(
            "Within cells: does geometry track fidelity among runs of one cell?",
            [
                "Not computed: the within-cell link needs at least 3 runs in a cell (seeds), and "
                "no cell of these results has that many analysed."
            ],
        )
    s = Section(
        "Within cells: does geometry track fidelity among runs of one cell?",
        [
            "Each metric ranked within its cell and centred on the cell's mean rank, then "
            "correlated over all runs (cell as a fixed factor): differences between cells cannot "
            "drive it. Partial given test accuracy the same way; intervals from a bootstrap of "
            f"runs within cells; q = {page.grid_correction('within_cell_')} over the grid."
        ],
    )
    return s.table(
        [
            "geometry",
            "fidelity",
            f"within-cell Spearman [{page.confidence:.0%} CI]",
            "partial | accuracy",
            "q (partial)",
            "runs",
        ],
        _link_rows(page, "within_cell_", with_control=False),
        f"Family: the grid of {ds['within_cell_spearman'].size} pairs. "
        f"Correction: {page.grid_correction('within_cell_')} over the grid.",
    )


def within_run_section(page: StudyPage) -> Section | None:
    if not page.has("within_run_median_spearman"):
        return None
    ds = page.ds
    s = Section(
        "Over epochs, within each run (confounded by training progress)",
        [
            "Spearman over the epochs of each run, then the median over runs with a bootstrap "
            "interval. " + str(ds.attrs.get("within_run_interpretation", ""))
        ],
    )
    rows = []
    for g in ds["within_run_median_spearman"]["geometry"].values:
        for f in ds["within_run_median_spearman"]["fidelity"].values:
            sel = {"geometry": g, "fidelity": f}
            rows.append(
                [
                    label(str(g)),
                    label(str(f)),
                    fmt_ci(
                        *(
                            page.value(f"within_run_{k}", **sel)
                            for k in ("median_spearman", "median_ci_low", "median_ci_high")
                        ),
                        2,
                    ),
                    count(page.value("within_run_n_runs", **sel)),
                ]
            )
    return s.table(["geometry", "fidelity", "median within-run Spearman", "runs"], rows)


def control_section(page: StudyPage) -> Section | None:
    ds = page.ds
    if not page.has("control_relative_change"):
        return None
    s = Section(
        "The reparametrisation control",
        [
            "On each run's final checkpoint, an invertible map of the feature layer (its eval-mode "
            "ZCA whitening) is inserted after it and its inverse folded into the linear head "
            "(geomxai.study.reparametrization_control). The network computes the same function, "
            "so every input-gradient saliency map and every fidelity metric is unchanged, while "
            "the geometry of the feature layer need not be. A geometry metric that this "
            "function-preserving change moves cannot be what saliency reads: whatever link it has "
            "with fidelity is indirect (through training), not an explanation through the "
            "function.",
            f"Across {ds.sizes['control_run']} runs the largest change of the logits was "
            f"{float(ds['control_logit_max_rel_diff'].max()):.1e} of "
            + (
                "their own spread over the probe (both networks in float64; the control refuses a "
                "change above 1e-8 as not function-preserving)"
                if ds.attrs.get("control_function_check") == "relative"
                else "their magnitude (runs measured before the relative float64 check)"
            )
            + f", and of the saliency maps {float(ds['control_saliency_max_rel_diff'].max()):.1e} "
            "of their norm. A metric is invariant where its relative change stays below 1e-6 in "
            "every run.",
        ],
    )
    rows = []
    for m in ds["control_metric"].values:
        change = ds["control_relative_change"].sel(control_metric=m).values
        inv = ds["control_invariant"].sel(control_metric=m).values
        rows.append(
            [
                label(str(m)),
                f"{np.nanmedian(np.abs(change)):.3g}",
                f"{int(inv.sum())}/{inv.size}",
                "invariant" if inv.all() else "moved by a function-preserving change",
            ]
        )
    return s.table(
        ["metric", "median |relative change|", "runs invariant", "under the control"], rows
    )


def power_section(page: StudyPage) -> Section | None:
    ds = page.ds
    if not page.has("power_detectable_difference"):
        return None
    source = ds.attrs.get("power_stated_source", "")
    s = Section(
        "Power",
        [
            "For each paired contrast: the smallest difference the seed count detects (two-sided "
            f"paired t-test, alpha {ds.attrs.get('power_alpha', 0.05)}, power "
            f"{ds.attrs.get('power_power', 0.8)}, from the observed SD of the per-seed "
            "differences), and the seeds a stated difference would need"
            + (f" (stated differences: {source})." if source and source != "none" else ".")
        ],
    )
    rows = []
    for m in ds["power_sd_difference"].dropna("metric", how="all")["metric"].values:
        for c in ds["contrast"].values:
            sel = {"metric": m, "contrast": c}
            rows.append(
                [
                    label(str(m)),
                    str(c),
                    count(page.value("power_n_seeds", **sel)),
                    fmt(page.value("power_sd_difference", **sel), 4),
                    fmt(page.value("power_detectable_difference", **sel), 4),
                    fmt(page.value("power_stated_difference", **sel), 4),
                    fmt(page.value("power_seeds_needed", **sel), 1),
                ]
            )
    return s.table(
        [
            "metric",
            "contrast",
            "seeds",
            "SD of differences",
            "detectable difference",
            "stated difference",
            "seeds needed",
        ],
        rows,
    )


def convergence_section(page: StudyPage) -> Section | None:
    ds = page.ds
    if "curve_test_acc" not in ds:
        return None
    _, test_text = _images(page)
    s = Section(
        "Convergence",
        [
            f"Test accuracy ({test_text}) after every epoch, mean over seeds. 'Flat from' is the "
            f"first epoch from which the mean stays within {stats.FLAT_TOLERANCE * 100:g} points "
            "of its final value."
        ],
    )
    if not page.has("curve_final_mean"):
        s.text.append(
            "These results predate the convergence summary; `geomxai study DESIGN --stage "
            "statistics` computes it from the same per-run files."
        )
        return s
    rows, final_means = [], {}
    fig, ax = new_figure(7, 4)
    epochs = ds["train_epoch"].values
    for cell in dict.fromkeys(map(str, ds["cell"].values)):
        row = [cell, "n/a", "n/a", "n/a", "n/a"]
        if cell in ds["flat_cell"].values:
            at = ds.sel(flat_cell=cell)
            ax.plot(epochs, at["curve_mean_test_acc"] * 100, marker=".", label=plain(cell))
            row[1] = str(int(at["curve_final_n"]))
            if int(at["curve_final_n"]):
                final_means[cell] = float(at["curve_final_mean"]) * 100
                row[2:] = [
                    f"{final_means[cell]:.2f}",
                    f"{float(at['curve_final_min']) * 100:.2f}-"
                    f"{float(at['curve_final_max']) * 100:.2f}",
                    str(int(at["flat_from"])),
                ]
        rows.append(row)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    s.table(["cell", "seeds", "final test acc (%)", "range", "flat from epoch"], rows)
    s.figures.append(page.figure(fig, "learning_curves"))
    if "trial_epochs" in ds:
        s.text.append(
            "How far these runs are from the model's plateau: the trial runs measured before the "
            "study (seed 0, each a cosine schedule over its own length, `protocol/`; each name "
            "gives the trial's lr, weight decay and epochs)."
        )
        best = int(np.argmax(ds["trial_final_acc"].values))
        plateau = float(ds["trial_final_acc"].values[best])
        if "regular" in final_means:
            regular = final_means["regular"]
            s.text.append(
                f"`regular` ends at {regular:.2f}% (mean over seeds), {plateau * 100 - regular:.2f} "
                f"points below the best trial's final {plateau * 100:.2f}% "
                f"({ds['trial'].values[best]}): every claim here is read at that distance from "
                "convergence."
            )
        s.table(
            ["trial", "epochs", "final test acc (%)", "best test acc (%)"],
            [
                [str(t), str(int(e)), f"{f * 100:.2f}", f"{b * 100:.2f}"]
                for t, e, f, b in zip(
                    ds["trial"].values,
                    ds["trial_epochs"].values,
                    ds["trial_final_acc"].values,
                    ds["trial_best_acc"].values,
                    strict=True,
                )
            ],
        )
    return s


def _first_variants(names, metrics) -> list[str]:
    """For a figure: each of ``names`` once, as itself or its first method/fill variant (the
    design's first saliency method and fill); the tables list every variant."""
    return [found[0] for n in names if (found := schema.with_variants([n], metrics))]


def verdict_section(page: StudyPage) -> Section | None:
    ds = page.ds
    st = page.design.get("statistics", {})
    s = Section(
        "Verdict",
        [
            f"Each answer with its {page.confidence:.0%} interval. Every call is the corrected one "
            f"({stats.CORRECTION_LABELS[st.get('correction', 'bh')]}, within the family of the "
            "table the claim comes from): 'better' or 'worse' only where the adjusted p-value is "
            "below "
            f"{st.get('alpha', 0.05):g}; 'not distinguishable after correction' where the interval "
            "excludes 0 but the correction does not let the call stand; 'not distinguishable' "
            "where the interval contains 0 at this seed count (see Power for what it could "
            "detect)."
        ],
    )
    rows = []
    if page.has("contrasts_verdict"):
        fid = [
            m
            for m in schema.with_variants(VERDICT["fidelity"], ds["metric"].values)
            if np.isfinite(ds["contrasts_estimate"].sel(metric=m)).any()
        ]
        for b in ds["baseline"].values:
            parts = [
                f"{label(m)}: " + _say(page, "contrasts_", {"metric": m, "baseline": b})
                for m in fid
            ]
            rows.append(
                [f"Does {st.get('treatment')} improve fidelity over {b}?", "; ".join(parts)]
            )
        if "test_acc" in ds["metric"].values:
            parts = [
                f"{b}: " + _say(page, "contrasts_", {"metric": "test_acc", "baseline": b})
                for b in ds["baseline"].values
            ]
            rows.append([f"Is {st.get('treatment')} more accurate?", "; ".join(parts)])
    if page.has("factorial_verdict"):
        parts = []
        for m in [
            m
            for m in schema.with_variants(VERDICT["interaction"], ds["metric"].values)
            if np.isfinite(ds["factorial_estimate"].sel(metric=m)).any()
        ]:
            parts.append(
                f"{label(m)}: interaction "
                + _say(page, "factorial_", {"metric": m, "effect": "interaction"})
                + ", whitening main effect "
                + _say(page, "factorial_", {"metric": m, "effect": "whitening"})
            )
        rows.append(
            [
                "Is the benefit an interaction of masking and whitening (paper, Table III)?",
                "; ".join(parts),
            ]
        )
    for prefix, _ in _dose_prefixes(ds):
        field_ = ds.attrs.get(f"{prefix}field", "dose")
        parts = []
        for m in [
            m
            for m in schema.with_variants(VERDICT["dose"], ds["metric"].values)
            if np.isfinite(ds[f"{prefix}slope"].sel(metric=m)).any()
        ]:
            parts.append(
                f"{label(m)} per decade: "
                + _say(
                    page,
                    prefix,
                    {"metric": m},
                    "slope",
                    "slope_ci_low",
                    "slope_ci_high",
                    "slope_verdict",
                    4,
                )
            )
        rows.append([f"Does {field_} move fidelity (dose-response)?", "; ".join(parts)])
    alpha = stats.results_alpha(ds)
    for prefix, question in (
        ("link_", "Which geometry metrics track fidelity across runs once accuracy is controlled?"),
        ("within_cell_", "Which of them track fidelity within cells?"),
    ):
        if not page.has(f"{prefix}partial_q_value"):
            continue
        tracked = stats.tracked_pairs(ds, prefix)
        rows.append(
            [
                question,
                "; ".join(f"{label(g)} ~ {label(f)} (partial rho {r:+.2f})" for g, f, r in tracked)
                or f"none at q < {alpha:g}",
            ]
        )
        if prefix == "link_" and page.has("control_invariant"):
            by_word: dict[str, list[str]] = {}
            for g in dict.fromkeys(g for g, _, _ in tracked):
                by_word.setdefault(stats.control_word(ds, g), []).append(label(g))
            said = {
                "moved": "moved by the function-preserving control, so at best indirect",
                "invariant": "invariant under it",
                "undetermined": "undetermined (a run's change is not a number)",
                "not covered": "not covered by the control",
            }
            text = " ".join(
                f"{said[w]}: {', '.join(sorted(by_word[w]))}." for w in said if w in by_word
            )
            rows.append(
                [
                    "Which of those survive the reparametrisation control?",
                    text or "no tracked metric to test",
                ]
            )
    if not rows:
        return None
    s.table(["question", "answer"], rows)
    changed = corrected_calls(page)
    if changed:
        s.text.append(
            "Calls the correction changed (the interval excludes 0, the adjusted p-value does not "
            "pass): " + "; ".join(changed) + "."
        )
    return s


def corrected_calls(page: StudyPage) -> list[str]:
    """Every claim whose per-claim interval excludes 0 but whose corrected call does not stand."""
    ds = page.ds
    out = []
    for prefix, _dims, var in (
        ("contrasts_", ("metric", "baseline"), "verdict"),
        ("factorial_", ("metric", "effect"), "verdict"),
    ) + tuple((p, ("metric",), "slope_verdict") for p, _ in _dose_prefixes(ds)):
        name = f"{prefix}{var}"
        if name not in ds:
            continue
        da = ds[name]
        for idx in np.ndindex(da.shape):
            if str(da.values[idx]) == "not distinguishable after correction":
                where = ", ".join(str(da[d].values[i]) for d, i in zip(da.dims, idx, strict=True))
                q = ds[name.replace("verdict", "q_value")].values[idx]
                out.append(f"{prefix.rstrip('_')} {where} (q {q:.3f})")
    return out


def warnings_section(page: StudyPage) -> Section | None:
    """What the measurements say they cannot mean (a leaking fill, constant maps, a model at
    chance, too few live units), as each run's analysis recorded it."""
    said = json.loads(page.ds.attrs.get("run_warnings", "{}") or "{}")
    if not said:
        return None
    by_text: dict[str, list[str]] = {}
    for run, texts in said.items():
        for text in texts:
            by_text.setdefault(text, []).append(run)
    s = Section(
        "Warnings the measurements recorded",
        [
            "Each warning below was recorded by a run's analysis beside the number it concerns: "
            "read the metrics it names with it in mind."
        ],
    )
    rows = [
        [text, f"{len(runs)}: " + ", ".join(sorted(runs)[:6]) + (" ..." if len(runs) > 6 else "")]
        for text, runs in sorted(by_text.items())
    ]
    return s.table(["warning", "runs"], rows)


def identical_cells_section(page: StudyPage) -> Section | None:
    """Cells that trained the same networks, with the config fields that name them apart: a
    contrast between them is zero by construction, which the reader must know before reading
    any verdict that sets one against the other."""
    groups = stats.identical_cells(page.ds)
    if not groups:
        return None
    s = Section("Cells that are the same computation", [SAME_COMPUTATION])
    rows = []
    for group in groups:
        for other in group[1:]:
            fields = sorted(_overrides(page, group[0]) | _overrides(page, other))
            a, b = _run_config(page, group[0]), _run_config(page, other)
            differ = "; ".join(f"{k}: {a.get(k)} / {b.get(k)}" for k in fields)
            rows.append([group[0], other, differ or "not recorded"])
    return s.table(["cell", "same as", "config fields that name them apart"], rows)


SAME_COMPUTATION = (
    "These cells ran the same seeds and, seed by seed, every per-run value (accuracy, every "
    "fidelity and geometry metric, the learning and per-epoch curves) is identical: the fields "
    "that name them apart change nothing in this model's training. A contrast between them is "
    "zero by construction, and a claim against one of them is a claim against the other."
)
"""What "one computation" means, said once for the study report and the across table."""


def _overrides(page: StudyPage, cell: str) -> set[str]:
    """The training fields the design sets for ``cell``."""
    return {k for c in page.design.get("cells", []) if c["name"] == cell for k in c["overrides"]}


def _run_config(page: StudyPage, cell: str) -> dict:
    """The recorded training config of one run of ``cell`` (defaults resolved)."""
    ds = page.ds
    run = next(
        str(r) for r, c in zip(ds["run"].values, ds["cell"].values, strict=True) if str(c) == cell
    )
    return page.configs.get(run, {})


def cells_section(page: StudyPage) -> Section | None:
    """Each metric per cell: mean over seeds with its interval (the paper's Tables I and II)."""
    ds = page.ds
    if not page.has("cells_mean"):
        return None
    wanted = [
        *json.loads(ds.attrs.get("metric_lists", "{}")).get("accuracy", []),
        *json.loads(ds.attrs.get("metric_lists", "{}")).get("fidelity", []),
    ]
    metrics = [m for m in wanted if m in ds["summary_metric"].values]
    metrics += [m for m in ("n_live_units",) if m in ds["summary_metric"].values]
    s = Section(
        "Each cell's final values",
        [
            f"Mean over seeds at the final checkpoint, with the {page.confidence:.0%} t-interval over seeds."
        ],
    )
    rows = []
    for c in ds["summary_cell"].values:
        row = [str(c), count(float(ds["cells_n"].sel(summary_cell=c).max()))]
        for m in metrics:
            sel = {"summary_cell": c, "summary_metric": m}
            mean, lo, hi = (page.value(f"cells_{k}", **sel) for k in ("mean", "ci_low", "ci_high"))
            row.append(
                "n/a"
                if not np.isfinite(mean)
                else f"{mean:.4f}" + (f" [{lo:.4f}, {hi:.4f}]" if np.isfinite(lo) else "")
            )
        rows.append(row)
    return s.table(["cell", "seeds", *map(label, metrics)], rows)


def units_section(page: StudyPage) -> Section | None:
    """Each run's live and dead units at the feature layer, beside entanglement on live units
    and over all units: where dead units distort a metric, the reader sees it run by run."""
    ds = page.ds
    if "n_live_units" not in ds or ds["n_live_units"].dims != ("run",):
        return None
    s = Section(
        "Live units, run by run",
        [
            "A unit of the feature layer is dead on the probe where its variance is at most "
            f"{DEAD_UNIT_TOL:g} of the layer's largest (docs/metrics.md). Effective rank and participation ratio are "
            "not changed by a dead unit (it adds a zero eigenvalue), so there the count is "
            "capacity; gradient entanglement is, so it is measured on live units, and its value "
            "over all units is shown beside it."
        ],
    )
    shown = [m for m in ("test_acc", "entanglement", "entanglement_all_units") if m in ds]
    rows = []
    for i, run in enumerate(ds["run"].values):
        live, dead = (
            float(ds[n].values[i]) if n in ds else np.nan for n in ("n_live_units", "n_dead_units")
        )
        units = f"{live:.0f} of {live + dead:.0f}" if np.isfinite(live + dead) else count(live)
        row = [str(run), str(ds["cell"].values[i]), str(int(ds["seed"].values[i])), units]
        row += [fmt(float(ds[m].values[i]), 4) for m in shown]
        rows.append(row)
    return s.table(["run", "cell", "seed", "live units", *map(label, shown)], rows)


def paper_section(page: StudyPage) -> Section | None:
    """The numbers the design cites from the paper, beside this study's, on geomxai's scales."""
    ds = page.ds
    claims = page.design.get("paper", {})
    if not claims or not page.has("cells_mean"):
        return None
    s = Section(
        "The paper's numbers beside ours",
        [
            "Each number the design cites from the paper, divided by its scale to geomxai's units "
            "(accuracy and areas in [0, 1]), beside this study's mean and interval for the same "
            "cell. The settings differ (the paper's data, model and length); the comparison is "
            "of direction and ordering, not of level."
        ],
    )
    rows = []
    for name, claim in claims.items():
        m = claim["metric"]
        for cell, value in claim["values"].items():
            sel = {"summary_cell": cell, "summary_metric": m}
            ours = "n/a"
            if cell in ds["summary_cell"].values and m in ds["summary_metric"].values:
                mean, lo, hi = (
                    page.value(f"cells_{k}", **sel) for k in ("mean", "ci_low", "ci_high")
                )
                ours = fmt(mean, 4) + (f" [{lo:.4f}, {hi:.4f}]" if np.isfinite(lo) else "")
            rows.append(
                [
                    name,
                    label(m),
                    cell,
                    fmt(value / claim["scale"], 4),
                    ours,
                    claim.get("source", ""),
                ]
            )
    return s.table(
        ["paper table", "metric", "cell", "paper (our scale)", "this study", "source"], rows
    )


SECTIONS: tuple[Callable[[StudyPage], Section | list[Section] | None], ...] = (
    status_section,
    warnings_section,
    identical_cells_section,
    verdict_section,
    convergence_section,
    cells_section,
    units_section,
    paper_section,
    contrasts_section,
    factorial_section,
    dose_sections,
    link_section,
    within_cell_section,
    within_run_section,
    control_section,
    power_section,
)
"""A study report's sections in page order; each returns its Section(s), or None to be left out."""


def render_sections(page: StudyPage) -> list[Section]:
    out: list[Section] = []
    for section in SECTIONS:
        got = section(page)
        if got is None:
            continue
        out.extend(got if isinstance(got, list) else [got])
    return out


STUDY_ENTRIES = ("index.html", "tables.md", "figures")
"""What a study report writes in its folder; a rebuild replaces these whole and keeps the rest
(``results.nc``, the per-run results, the protocol trials)."""


def build_study_report(results: xr.Dataset, out_dir, *, detail: xr.Dataset | None = None) -> Path:
    """Write a study's report (``index.html``, ``tables.md``, ``figures/``) from its results.

    Parameters
    ----------
    results : xr.Dataset
        A study's ``results.nc`` (written by ``geomxai study ... --stage statistics``).
    out_dir : path-like
        The report folder; other files in it are kept.
    detail : xr.Dataset, optional
        The study's per-checkpoint results over ``(regime, seed, epoch)`` (a small study's
        ``detail.nc``): their sections (curves, maps, spectra, over-epochs figures) join the page.

    Returns
    -------
    Path
        ``index.html``.

    Raises
    ------
    ResultsVersionError
        Results of another layout (an older geomxai); the message says how to rebuild them.
    """
    from geomxai._fs import atomic_folder
    from geomxai.report._report import CSS, detail_sections

    check_schema_version(results)
    out_dir = Path(out_dir)
    title = str(results.attrs.get("title") or results.attrs.get("study") or "geomxai study")
    with atomic_folder(out_dir, replaces=STUDY_ENTRIES) as tmp:
        (tmp / "figures").mkdir()
        page = StudyPage.of(results, tmp)
        sections = render_sections(page)
        body = "".join(s.html() for s in sections)
        if detail is not None:
            body += "<h2>Every checkpoint of every run</h2>" + detail_sections(detail, tmp)
        meta = _table_html(
            ["what", "value"],
            [
                [k, str(results.attrs.get(k, "unknown"))]
                for k in ("created", "hardware", "commit", "command")
            ],
        )
        (tmp / "index.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{meta}{body}</body></html>\n",
            encoding="utf-8",
        )
        (tmp / "tables.md").write_text(
            f"# {title}\n\n" + "\n\n".join(s.markdown() for s in sections) + "\n", encoding="utf-8"
        )
    return out_dir / "index.html"

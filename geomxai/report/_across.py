"""The across-settings report: one table per claim x setting, and what the table says in words.

Rendered from the across-settings results alone (``geomxai.pipeline``'s ``across_results``):
every cell is a setting's own corrected verdict with its estimate and interval; the summary
sentences were sorted by the pipeline (holds everywhere / depends on the setting / no setting
supports the paper's claim). Nothing here computes a statistic.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import xarray as xr

from geomxai import stats
from geomxai.report._study import SAME_COMPUTATION, Section, _table_html, fmt_ci, label

FAMILIES = (
    ("contrasts", "SaliencyDecor against each baseline (paired by seed)"),
    ("factorial", "The masking x whitening interaction (paper, Table III)"),
    ("dose", "The dose-response of lambda"),
)


def _cell(ds: xr.Dataset, i: int, j: int) -> str:
    word = str(ds["verdict"].values[i, j])
    if word == "not measured":
        return word
    est, lo, hi = (float(ds[k].values[i, j]) for k in ("estimate", "ci_low", "ci_high"))
    return f"{word} ({fmt_ci(est, lo, hi)}; q {float(ds['q_value'].values[i, j]):.3f})"


def _compute(seconds: dict) -> str:
    """A setting's recorded process time per stage, in hours."""
    said = [f"{k.removesuffix('_s')} {v / 3600:.2f} h" for k, v in seconds.items() if v]
    return ", ".join(said) or "not recorded"


def across_sections(ds: xr.Dataset) -> list[Section]:
    settings = [str(s) for s in ds["setting"].values]
    summary = json.loads(ds.attrs.get("summary", "{}"))
    sources = json.loads(ds.attrs.get("sources", "{}"))
    head = Section(
        "What this report rests on",
        [
            "Each column is one setting's study (its design and results below); each cell is that "
            "study's own corrected verdict, with the estimate, its 95% interval and the adjusted "
            "p-value of its family (each setting is corrected within its own tables; nothing is "
            "re-tested here). A claim measured under several saliency methods or fills has one "
            "row per variant."
        ],
    ).table(
        ["setting", "runs", "compute (summed over runs)", "hardware", "results", "created"],
        [
            [
                s,
                str(src.get("runs", "")),
                _compute(src.get("compute_s", {})),
                src.get("hardware", ""),
                src.get("results", ""),
                src.get("created", ""),
            ]
            for s in settings
            for src in [sources.get(s, {})]
        ],
    )
    same = {s: src["same_computation"] for s, src in sources.items() if src.get("same_computation")}
    if same:
        head.text.append(
            "Cells that are one computation (each setting's report lists the fields that name "
            "them apart): "
            + "; ".join(
                f"{s}: " + ", ".join(" = ".join(group) for group in groups)
                for s, groups in same.items()
            )
            + ". "
            + SAME_COMPUTATION
        )
    pending = json.loads(ds.attrs.get("pending", "{}") or "{}")
    if pending:
        head.text.append(
            f"Not in these tables yet ({len(pending)} of {len(pending) + len(settings)} settings): "
            "their results do not cover every run their design plans, and a study read half-way "
            "is not its design's answer. "
            + "; ".join(
                f"{name}: {p['analysed']} of {p['planned']} runs analysed ({p['next']})"
                for name, p in pending.items()
            )
            + ". Rerun this comparison when they finish."
        )
    words = Section("In plain words")
    if pending:
        words.text.append(
            f'"Every setting" below means the {len(settings)} settings in the tables, not the '
            f"{len(pending)} pending."
        )
    short = [s.split(" (")[0] for s in settings]
    holds = summary.get("holds", [])
    words.bullets(
        f"Holds in every setting ({len(holds)}):" if holds else "Holds in every setting: none.",
        holds,
    )
    unsupported = summary.get("unsupported", [])
    words.bullets(
        "The paper claims it; no setting supports it"
        + (f" ({len(unsupported)}):" if unsupported else ": none."),
        unsupported,
    )
    if ds.sizes.get("geometry", 0):
        for key, lead in (
            (
                "tracks_within_everywhere",
                "Geometry that tracks some fidelity metric within cells in every setting",
            ),
            (
                "invariant_everywhere",
                "Geometry the function-preserving control leaves unchanged in every setting",
            ),
        ):
            items = [label(x) for x in summary.get(key, [])]
            words.bullets(lead + (":" if items else ": none."), items)
    depends = summary.get("depends_rows")
    if depends:
        words.table(
            ["depends on the setting", *short],
            depends,
            "Claims on which the settings' corrected verdicts differ; a setting that measured a "
            "claim under several saliency methods or fills gives each verdict it reached.",
        )
    elif summary.get("depends"):  # results written before the rows were kept
        words.bullets("Depends on the setting:", summary["depends"])
    else:
        words.bullets("Depends on the setting: none.", [])
    out = [head, words]
    for family, title in FAMILIES:
        rows = []
        for i in np.flatnonzero(ds["claim_family"].values == family):
            rows.append(
                [str(ds["claim_text"].values[i]), str(ds["claim_metric"].values[i])]
                + [_cell(ds, i, j) for j in range(len(settings))]
            )
        if rows:
            out.append(
                Section(title).table(["claim", "metric", *settings], rows, _correction(sources))
            )
    if ds.sizes.get("geometry", 0):
        out.append(geometry_section(ds, settings))
    return out


def _correction(sources: dict) -> str:
    """A verdict table's caption: each setting's correction, within its own family."""
    said = {}
    for setting, src in sources.items():
        said.setdefault(stats.CORRECTION_LABELS[src.get("correction", "bh")], []).append(setting)
    return "Correction: each setting's calls are corrected within that setting's family, by " + (
        "; ".join(f"{word} ({', '.join(names)})" for word, names in said.items()) + "."
    )


def _tracked(ds: xr.Dataset, table: str, at: dict) -> str:
    n, of = (int(ds[f"geometry_{table}_{k}"].sel(at)) for k in ("tracked", "pairs"))
    if n < 0:
        return "not measured"
    return f"{n}/{of}" if of else "no pair with a finite q"


def geometry_section(ds: xr.Dataset, settings: list[str]) -> Section:
    """Which geometry tracks fidelity (pooled and within cells) and what the control says of
    it, setting by setting."""
    rows = []
    for g in ds["geometry"].values:
        row = [label(str(g))]
        for s in settings:
            at = {"geometry": g, "setting": s}
            rho = ds["geometry_within_rho"].sel(at)
            named = [
                f"{label(str(f))} {float(r):+.2f}"
                for f, r in zip(rho["fidelity"].values, rho.values, strict=True)
                if np.isfinite(r)
            ]
            row.append(
                f"pooled {_tracked(ds, 'pooled', at)}, within cells {_tracked(ds, 'within', at)}"
                + (f" ({', '.join(named)})" if named else "")
                + f"; control: {ds['geometry_control'].sel(at).item()}"
            )
        rows.append(row)
    return Section(
        "Which geometry tracks fidelity, and whether it survives the control",
        [
            "For each geometry metric and setting: how many of the setting's fidelity metrics it "
            "tracks across runs (pooled, accuracy controlled) and within cells (cell as a fixed "
            "factor, accuracy controlled), each at the setting's own corrected q below its alpha, "
            "out of the pairs with a finite q; the fidelity metrics it tracks within cells, with "
            "the partial Spearman; and what the function-preserving reparametrisation does to it "
            "in the setting's runs: invariant in every run, moved in some (any link it has is "
            "indirect, through training), undetermined (a change that is not a number), or not "
            "covered by the control."
        ],
    ).table(["geometry", *settings], rows)


def build_across_report(results: xr.Dataset, out_dir) -> Path:
    """Write ``index.html`` and ``tables.md`` of an across-settings comparison."""
    from geomxai._fs import atomic_folder
    from geomxai.report._report import CSS

    out_dir = Path(out_dir)
    title = str(results.attrs.get("title", "geomxai: the question across settings"))
    sections = across_sections(results)
    with atomic_folder(out_dir, replaces=("index.html", "tables.md")) as tmp:
        meta = _table_html(
            ["what", "value"],
            [
                [k, str(results.attrs.get(k, ""))]
                for k in ("created", "hardware", "commit", "command")
            ],
        )
        (tmp / "index.html").write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{meta}"
            + "".join(s.html() for s in sections)
            + "</body></html>\n",
            encoding="utf-8",
        )
        (tmp / "tables.md").write_text(
            f"# {title}\n\n" + "\n\n".join(s.markdown() for s in sections) + "\n", encoding="utf-8"
        )
    return out_dir / "index.html"

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

from geomxai.report._study import Section, _table_html, fmt_ci, label

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
        ["setting", "results", "created"],
        [
            [s, sources.get(s, {}).get("results", ""), sources.get(s, {}).get("created", "")]
            for s in settings
        ],
    )
    words = Section("In plain words")
    for key, title in (
        ("holds", "Holds in every setting"),
        ("depends", "Depends on the setting"),
        ("unsupported", "The paper claims it; no setting supports it"),
        (
            "tracks_within_everywhere",
            "Geometry that tracks some fidelity metric within cells in every setting",
        ),
        (
            "invariant_everywhere",
            "Geometry the function-preserving control leaves unchanged in every setting",
        ),
    ):
        items = summary.get(key, [])
        words.text.append(f"{title}: " + ("; ".join(items) if items else "none") + ".")
    out = [head, words]
    for family, title in FAMILIES:
        rows = []
        for i in np.flatnonzero(ds["claim_family"].values == family):
            rows.append(
                [str(ds["claim_text"].values[i]), str(ds["claim_metric"].values[i])]
                + [_cell(ds, i, j) for j in range(len(settings))]
            )
        if rows:
            out.append(Section(title).table(["claim", "metric", *settings], rows))
    if "geometry" in ds.dims:
        out.append(geometry_section(ds, settings))
    return out


def geometry_section(ds: xr.Dataset, settings: list[str]) -> Section:
    """Which geometry tracks fidelity (pooled and within cells) and what the control says of
    it, setting by setting."""
    rows = []
    for g in ds["geometry"].values:
        row = [label(str(g))]
        for s in settings:
            at = {"geometry": g, "setting": s}
            pooled, within = (
                int(ds[f"geometry_{k}_tracked"].sel(at)) for k in ("pooled", "within")
            )
            pairs = int(ds["geometry_pairs"].sel(at))
            if pooled < 0 and within < 0:
                row.append("not measured")
                continue
            if pairs == 0:
                row.append("no pair with a finite correlation")
                continue
            named = [
                p.rsplit(":", 1)
                for p in str(ds["geometry_within_pairs"].sel(at).item()).split("; ")
                if p
            ]
            row.append(
                f"pooled {max(pooled, 0)}/{pairs}, within cells {max(within, 0)}/{pairs}"
                + (" (" + ", ".join(f"{label(f)} {r}" for f, r in named) + ")" if named else "")
                + f"; control: {ds['geometry_control'].sel(at).item()}"
            )
        rows.append(row)
    return Section(
        "Which geometry tracks fidelity, and whether it survives the control",
        [
            "For each geometry metric and setting: how many of the setting's fidelity metrics it "
            "tracks across runs (pooled, accuracy controlled) and within cells (cell as a fixed "
            "factor, accuracy controlled), each at the setting's own corrected q below its alpha; "
            "the fidelity metrics it tracks within cells, with the partial Spearman; and whether "
            "the function-preserving reparametrisation leaves it unchanged in every run "
            "(invariant), changes it (moved: any link it has is indirect, through training), or "
            "does not cover it."
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

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

from geomxai.report._study import Section, _table_html, fmt_ci

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
    return out


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

"""The question across settings: one table per claim x setting, from the settings' results.

An across-settings file (``[across]``: a name, a title, the designs) names studies whose
``results.nc`` the engine writes; a study whose results do not yet cover every run its design
plans (still running, or not started) is left out of the tables and listed as pending, with how
far it is and the command that finishes it. For the others this module gathers, for each claim
of the paper and each setting, the estimate, its interval and the setting's corrected verdict
(each setting's own family and correction: nothing is re-tested here), and, for each geometry
metric and setting, what the setting's link (pooled and within cells) and control said of it.
The report says, in words generated from the tables, what holds in every setting, what depends
on the setting, what no setting supports, and which geometry tracks fidelity within cells and
survives the control in every setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from geomxai import schema, stats
from geomxai.pipeline._design import DesignError, _read, _Table, find_design, load_design
from geomxai.rundir import run_name

__all__ = [
    "Across",
    "CLAIMS",
    "across_results",
    "across_status",
    "geometry_results",
    "is_across",
    "load_across",
    "run_across",
    "setting_status",
    "summarise",
]


@dataclass(frozen=True)
class Claim:
    """One claim the paper makes, read from one family of a setting's results."""

    key: str
    text: str
    family: str  # contrasts | factorial | dose
    metric: str
    against: str | None = None  # a baseline (contrasts) or an effect (factorial)
    expected: str | None = None  # the verdict the paper's claim means


CLAIMS: tuple[Claim, ...] = (
    *(
        Claim(
            f"accuracy-{b}",
            f"SaliencyDecor is more accurate than {b}",
            "contrasts",
            "test_acc",
            b,
            "better",
        )
        for b in ("regular", "sgt", "dbn")
    ),
    *(
        Claim(f"{m}-{b}", f"{label} is better than {b}'s", "contrasts", m, b, "better")
        for m, label in (
            ("morf_auc", "SaliencyDecor's MoRF AUC"),
            ("fidelity_gap", "SaliencyDecor's LeRF - MoRF gap"),
            ("deletion_auc", "SaliencyDecor's deletion AUC"),
            ("insertion_auc", "SaliencyDecor's insertion AUC"),
            ("gini", "SaliencyDecor's Gini (sharpness)"),
            ("topq_contrast", "SaliencyDecor's top-10% contrast (sharpness)"),
        )
        for b in ("regular", "sgt", "dbn")
    ),
    *(
        Claim(
            f"interaction-{m}",
            f"masking x whitening interaction on {lab} is beneficial",
            "factorial",
            m,
            "interaction",
            "better",
        )
        for m, lab in (
            ("test_acc", "accuracy"),
            ("morf_auc", "MoRF AUC"),
            ("fidelity_gap", "the LeRF - MoRF gap"),
        )
    ),
    *(
        Claim(f"dose-{m}", f"more decorrelation (lambda) improves {lab}", "dose", m, None, "better")
        for m, lab in (
            ("morf_auc", "MoRF AUC"),
            ("fidelity_gap", "the LeRF - MoRF gap"),
            ("test_acc", "accuracy"),
        )
    ),
)
"""The claims of the question, each with the verdict the paper's claim means."""


@dataclass(frozen=True)
class Across:
    """A parsed across-settings file."""

    name: str
    title: str
    source: str
    designs: tuple[str, ...]
    out_dir: Path


def is_across(path) -> bool:
    """Whether a TOML file is an across-settings file (an ``[across]`` table)."""
    try:
        return "across" in _read(find_design(path))
    except DesignError:
        return False


def run_across(across: Across) -> Path:
    """Gather the settings' results, write ``results.nc`` and the report; the report's path."""
    import shlex
    import sys

    from geomxai.report import build_across_report
    from geomxai.study import save_results, stamp

    results = across_results(across)
    save_results(
        stamp(results, command=" ".join(map(shlex.quote, sys.argv))), across.out_dir / "results.nc"
    )
    return build_across_report(results, across.out_dir)


def load_across(path, *, out_dir=None) -> Across:
    """Read and check an across-settings file: every design it names must load."""
    path = find_design(path)
    raw = _read(path)
    extra = [k for k in raw if k != "across"]
    if extra:
        raise DesignError(f"{path}: an across-settings file has one table, [across]; got {extra}")
    t = _Table(path, "across", raw["across"], ("name", "title", "designs", "out"))
    designs = t.strings("designs")
    if not designs:
        t.fail("designs", "must name the study designs to compare (configs/NAME.toml or NAME)")
    for d in designs:
        load_design(d)  # each must be a valid design; its error names the file
    name = t.string("name", path.stem)
    out = Path(out_dir) if out_dir is not None else Path(t.string("out", f"reports/{name}"))
    return Across(name, t.string("title", name), str(path), tuple(designs), out)


def _setting(design) -> str:
    c = design.train
    return f"{design.name} ({c.get('dataset', '?')}, {c.get('model', '?')})"


def setting_status(design) -> dict:
    """Where one setting of a comparison stands: ``planned`` (runs its design plans),
    ``analysed`` (those with a per-run result), ``whole`` (whether its ``results.nc`` was
    computed from every planned run, so the setting enters the tables) and ``next`` (the
    command that finishes it, "" when whole)."""
    from geomxai.pipeline._statistics import analysed_runs, runs_in
    from geomxai.study import open_results_file

    path = design.out_dir / "results.nc"
    planned = {run_name(c, s) for c, s in design.plan()}
    used: set[str] = set()
    if path.is_file():
        with open_results_file(path) as ds:
            used = runs_in(ds)
    analysed = len(analysed_runs(design))
    source = Path(design.source).resolve()
    if source.is_relative_to(Path.cwd().resolve()):  # as a user in the project would type it
        source = source.relative_to(Path.cwd().resolve())
    whole = planned <= used
    if whole:
        step = ""
    elif analysed < len(planned):
        step = f"finish it with `geomxai study {source.as_posix()} --stage runs`, then `--stage report`"
    else:
        step = f"every run is analysed: `geomxai study {source.as_posix()} --stage report`"
    return {
        "setting": _setting(design),
        "planned": len(planned),
        "analysed": analysed,
        "whole": whole,
        "next": step,
    }


def across_status(across: Across) -> list[dict]:
    """:func:`setting_status` of each setting of a comparison, in its order; nothing is written."""
    return [setting_status(load_design(d)) for d in across.designs]


def _read_claim(ds: xr.Dataset, claim: Claim, metric: str) -> dict | None:
    if claim.family == "contrasts":
        if "contrasts_estimate" not in ds or claim.against not in ds["baseline"].values:
            return None
        sel, p = {"metric": metric, "baseline": claim.against}, "contrasts_"
        keys = ("estimate", "ci_low", "ci_high", "q_value", "verdict")
    elif claim.family == "factorial":
        if "factorial_estimate" not in ds:
            return None
        sel, p = {"metric": metric, "effect": claim.against}, "factorial_"
        keys = ("estimate", "ci_low", "ci_high", "q_value", "verdict")
    else:
        if "dose_slope" not in ds:
            return None
        sel, p = {"metric": metric}, "dose_"
        keys = ("slope", "slope_ci_low", "slope_ci_high", "slope_q_value", "slope_verdict")
    try:
        values = [ds[f"{p}{k}"].sel(**sel).values for k in keys]
    except KeyError:
        return None
    if not np.isfinite(float(values[0])):
        return None
    return {
        "estimate": float(values[0]),
        "ci_low": float(values[1]),
        "ci_high": float(values[2]),
        "q_value": float(values[3]),
        "verdict": str(values[4]),
    }


def across_results(across: Across) -> xr.Dataset:
    """Claims x settings: estimate, interval, q-value and the setting's corrected verdict.

    A claim on a metric measured under several saliency methods or fills has one row per
    variant (``claim`` = ``<key>[<variant>]``).
    """
    from geomxai.study import open_results_file

    settings, per_setting, sources, pending = [], [], {}, {}
    for d in across.designs:
        design = load_design(d)
        path = design.out_dir / "results.nc"
        status = setting_status(design)
        if not status["whole"]:
            pending[status["setting"]] = {k: status[k] for k in ("planned", "analysed", "next")}
            continue
        settings.append(status["setting"])
        per_setting.append(open_results_file(path))
        sources[settings[-1]] = {
            "results": str(path),
            "created": per_setting[-1].attrs.get("created", ""),
            "runs": int(per_setting[-1].sizes.get("run", 0)),
            "compute_s": json.loads(per_setting[-1].attrs.get("wall_time", "{}") or "{}"),
            "hardware": per_setting[-1].attrs.get("hardware", ""),
            "correction": design.statistics.correction,
            "same_computation": stats.identical_cells(per_setting[-1]),
        }
    if not settings:
        raise FileNotFoundError(
            "no setting of this comparison has the results of its whole design yet: "
            + "; ".join(
                f"{k}: {v['analysed']} of {v['planned']} runs analysed, {v['next']}"
                for k, v in pending.items()
            )
        )
    rows: dict[str, dict] = {}
    for claim in CLAIMS:
        for s_i, ds in enumerate(per_setting):
            names = ds["metric"].values if "metric" in ds.coords else []
            for metric in schema.with_variants([claim.metric], names) or [claim.metric]:
                key = claim.key if metric == claim.metric else f"{claim.key}[{metric}]"
                got = _read_claim(ds, claim, metric)
                if got is None:
                    continue
                row = rows.setdefault(key, {"claim": claim, "metric": metric, "values": {}})
                row["values"][s_i] = got
    keys = list(rows)
    shape = (len(keys), len(settings))
    arrays = {k: np.full(shape, np.nan) for k in ("estimate", "ci_low", "ci_high", "q_value")}
    verdict = np.full(shape, "not measured", dtype=object)
    for i, key in enumerate(keys):
        for j, got in rows[key]["values"].items():
            for k in arrays:
                arrays[k][i, j] = got[k]
            verdict[i, j] = got["verdict"]
    out = xr.Dataset(
        {k: (("claim", "setting"), v) for k, v in arrays.items()}
        | {"verdict": (("claim", "setting"), verdict.astype(str))},
        coords={
            "claim": keys,
            "setting": settings,
            "claim_text": ("claim", [rows[k]["claim"].text for k in keys]),
            "claim_metric": ("claim", [rows[k]["metric"] for k in keys]),
            "claim_expected": ("claim", [rows[k]["claim"].expected or "" for k in keys]),
            "claim_family": ("claim", [rows[k]["claim"].family for k in keys]),
        },
    )
    out.attrs.update(
        {
            "across": across.name,
            "title": across.title,
            "designs": json.dumps(list(across.designs)),
            "sources": json.dumps(sources),
            "pending": json.dumps(pending),
            "schema_version": schema.SCHEMA_VERSION,
            "kind": "across-settings",
        }
    )
    out = out.merge(geometry_results(per_setting, settings))
    out.attrs["summary"] = json.dumps(summarise(out))
    return out


def geometry_results(per_setting: list[xr.Dataset], settings: list[str]) -> xr.Dataset:
    """Geometry metrics x settings, from each setting's own link and control tables (nothing is
    re-tested): per table (``pooled``: the link across runs; ``within``: within cells) how many
    fidelity metrics a geometry metric tracks (:func:`geomxai.stats.tracked_pairs`) out of how
    many pairs have a finite q, -1 where the setting has no such table or no such metric; the
    partial Spearman of each pair tracked within cells (NaN elsewhere); and what the control
    says of it (:func:`geomxai.stats.control_word`, ``not measured`` without a control)."""
    tables = {"pooled": "link_", "within": "within_cell_"}
    geometry, fidelity = {}, {}
    for ds in per_setting:
        for prefix in tables.values():
            if f"{prefix}partial_q_value" in ds:
                geometry.update(
                    dict.fromkeys(map(str, ds[f"{prefix}partial_q_value"]["geometry"].values))
                )
                fidelity.update(
                    dict.fromkeys(map(str, ds[f"{prefix}partial_q_value"]["fidelity"].values))
                )
    geometry, fidelity = list(geometry), list(fidelity)
    shape = (len(geometry), len(settings))
    tracked = {k: np.full(shape, -1) for k in tables}
    pairs = {k: np.full(shape, -1) for k in tables}
    rho = np.full((*shape, len(fidelity)), np.nan)
    control = np.full(shape, "not measured", dtype=object)
    for j, ds in enumerate(per_setting):
        for key, prefix in tables.items():
            if f"{prefix}partial_q_value" not in ds:
                continue
            q = ds[f"{prefix}partial_q_value"]
            found = stats.tracked_pairs(ds, prefix)
            for i, g in enumerate(geometry):
                if g not in q["geometry"].values:
                    continue
                pairs[key][i, j] = int(np.isfinite(q.sel(geometry=g).values).sum())
                tracked[key][i, j] = sum(1 for g2, _, _ in found if g2 == g)
                if key == "within":
                    for g2, f, r in found:
                        if g2 == g:
                            rho[i, j, fidelity.index(f)] = r
        if "control_invariant" in ds:
            for i, g in enumerate(geometry):
                control[i, j] = stats.control_word(ds, g)
    count = {"meaning": "-1: the setting has no such table, or not this metric in it"}
    dims = ("geometry", "setting")
    return xr.Dataset(
        {
            **{f"geometry_{k}_tracked": (dims, tracked[k], count) for k in tables},
            **{f"geometry_{k}_pairs": (dims, pairs[k], count) for k in tables},
            "geometry_within_rho": ((*dims, "fidelity"), rho),
            "geometry_control": (dims, control.astype(str)),
        },
        coords={"geometry": geometry, "setting": settings, "fidelity": fidelity},
    )


def summarise(results: xr.Dataset) -> dict[str, list[str]]:
    """Each claim of the paper, over its saliency-method/fill variants, sorted by what the
    settings' corrected verdicts say: one verdict in every setting and variant (``holds``),
    different verdicts (``depends``, naming each setting's; ``depends_rows``, the same as
    ``[claim, verdicts of each setting]`` rows), and no setting or variant giving
    the verdict the paper's claim means (``unsupported``); then the geometry metrics that track
    some fidelity metric within cells, and that the control leaves invariant, in every
    setting."""
    out: dict[str, list] = {
        "holds": [],
        "depends": [],
        "depends_rows": [],  # [claim, each setting's verdicts over its variants], for a table
        "unsupported": [],
        "tracks_within_everywhere": [],
        "invariant_everywhere": [],
    }
    settings = [str(x).split(" (")[0] for x in results["setting"].values]
    claims: dict[str, list[int]] = {}
    for i, key in enumerate(results["claim"].values):
        claims.setdefault(str(key).split("[")[0], []).append(i)
    for rows in claims.values():
        said = [
            list(
                dict.fromkeys(
                    str(w) for w in results["verdict"].values[rows, j] if str(w) != "not measured"
                )
            )
            for j in range(len(settings))
        ]
        words = {w for per in said for w in per}
        if not words:
            continue
        text = str(results["claim_text"].values[rows[0]])
        if len(words) == 1 and all(said):
            out["holds"].append(f"{text}: {words.pop()} in every setting")
        else:
            words_of = [" / ".join(per) if per else "not measured" for per in said]
            out["depends"].append(
                f"{text}: " + "; ".join(f"{n} {w}" for n, w in zip(settings, words_of, strict=True))
            )
            out["depends_rows"].append([text, *words_of])
        expected = str(results["claim_expected"].values[rows[0]])
        if expected and expected not in words:
            out["unsupported"].append(text)
    if results.sizes.get("geometry", 0):
        for g in results["geometry"].values:
            within = results["geometry_within_tracked"].sel(geometry=g).values
            if (within > 0).all():
                out["tracks_within_everywhere"].append(str(g))
            if (results["geometry_control"].sel(geometry=g).values == "invariant").all():
                out["invariant_everywhere"].append(str(g))
    return out

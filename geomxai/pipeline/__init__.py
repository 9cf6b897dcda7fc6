"""Studies from design files: the one engine every study runs on.

A design (:func:`load_design`) declares the data, model, cells, seeds, probe, analysis and
statistics of a study in one TOML file; :func:`run_design` runs its stages (train, analyse,
statistics, report), each skipping what is done. This package sits above the parts it strings
together (:mod:`geomxai.train`, :mod:`geomxai.study`, :mod:`geomxai.stats`,
:mod:`geomxai.report`), beside the CLI; none of them imports it.

    geomxai study configs/digits.toml                      # every stage
    geomxai study configs/fashion-mnist-converged.toml --stage report
"""

from geomxai.pipeline._across import (
    Across,
    across_results,
    across_status,
    is_across,
    load_across,
    run_across,
)
from geomxai.pipeline._design import (
    Cell,
    Design,
    DesignError,
    DoseSpec,
    StatisticsSpec,
    find_design,
    load_design,
    spread_epochs,
)
from geomxai.pipeline._stages import ALL, STAGES, run_design, run_status
from geomxai.pipeline._statistics import SCHEMA_VERSION, runs_table, study_statistics
from geomxai.rundir import run_name

__all__ = [
    "ALL",
    "Across",
    "across_results",
    "across_status",
    "is_across",
    "load_across",
    "open_study",
    "run_across",
    "SCHEMA_VERSION",
    "STAGES",
    "Cell",
    "Design",
    "DesignError",
    "DoseSpec",
    "StatisticsSpec",
    "find_design",
    "load_design",
    "run_design",
    "run_name",
    "run_status",
    "run_study",
    "runs_table",
    "spread_epochs",
    "study_statistics",
]


def run_study(
    design="quick",
    *,
    overrides=None,
    runs_root=None,
    reports_root=None,
    stages=ALL,
    seeds=None,
):
    """Load a design (a path or a name under ``configs/``) and run its stages.

    Parameters
    ----------
    design : str or path-like
        The design file.
    overrides : list of str, optional
        ``KEY=VALUE`` training fields on top of its ``[train]`` table.
    runs_root, reports_root : path-like, optional
        Put run directories under ``runs_root/NAME`` and results and the report under
        ``reports_root/NAME`` instead of the design's own ``[study] runs`` and ``out``.
    stages, seeds
        As :func:`run_design`.

    Returns
    -------
    The last stage's output: the report's ``index.html`` for a whole study.
    """
    loaded = open_study(design, overrides=overrides, runs_root=runs_root, reports_root=reports_root)
    if isinstance(loaded, Across):  # a comparison of studies: their results, no stage of its own
        if seeds is not None or not set(stages) <= {*ALL, "report"} or "report" not in stages:
            asked = "--seeds" if seeds is not None else f"--stage {' '.join(stages)}"
            raise ValueError(
                f"{loaded.source} compares studies already run: it has no stages or seeds of its "
                f"own, so {asked} means nothing to it; run that on each study it names "
                "(geomxai study DESIGN ...), then rerun the comparison (no --stage, or --stage "
                "report)"
            )
        return run_across(loaded)
    return run_design(loaded, stages=stages, seeds=seeds)


def open_study(design="quick", *, overrides=None, runs_root=None, reports_root=None):
    """The :class:`Design` (or :class:`Across`) that :func:`run_study` would run, loaded and
    validated whole, with its overrides and roots applied; nothing is trained or written.

    >>> open_study("quick").name
    'quick'
    """
    from pathlib import Path

    from geomxai._fs import check_nonempty_path
    from geomxai.train import parse_override

    found = find_design(design)
    if is_across(found):
        for given, flag in ((overrides, "--set"), (runs_root, "--runs")):
            if given:
                raise ValueError(
                    f"{found} compares studies already run, so {flag} means nothing to it; give "
                    f"{flag} to each study it names (geomxai study DESIGN {flag} ...), then "
                    "rerun the comparison"
                )
        root = (
            None if reports_root is None else Path(check_nonempty_path(reports_root, "--reports"))
        )
        across = load_across(found)
        return load_across(found, out_dir=None if root is None else root / across.name)
    name = load_design(found).name
    return load_design(
        found,
        overrides=dict(parse_override(o) for o in overrides or []),
        runs_dir=None
        if runs_root is None
        else Path(check_nonempty_path(runs_root, "runs_root (--runs)")) / name,
        out_dir=None
        if reports_root is None
        else Path(check_nonempty_path(reports_root, "reports_root (--reports)")) / name,
    )

"""``build_report``: the page of one analysis's results, refused when their layout is not the
one this geomxai draws (an older file would render with sections silently missing).

The layout check is the study report's own (:func:`geomxai.report.check_schema_version`), so
every report refuses an old file the same way; the page itself is :mod:`geomxai.report._report`.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from geomxai import schema
from geomxai.report._report import write_report
from geomxai.report._study import STUDY_FIX, check_schema_version

REBUILD = (
    "run one analysis again (geomxai analyze, analyze_model, analyze_checkpoints); "
    f"{STUDY_FIX}; for results you assembled yourself in this layout, set "
    f"attrs['schema_version'] = {schema.SCHEMA_VERSION}"
)
"""How results of an older layout are rebuilt, whichever made them."""


def build_report(results: xr.Dataset, out_dir) -> Path:
    """Write a self-contained HTML report (figures as PNG files beside it) of a results Dataset.

    Parameters
    ----------
    results : xr.Dataset
        As returned by :func:`geomxai.study.analyze_runs`, :func:`~geomxai.study.analyze_model`
        or :func:`~geomxai.study.combine_runs` of :func:`~geomxai.study.analyze_checkpoints`
        results: dims ``regime``, ``seed``, ``epoch``, ``layer``, ``fraction``, ... and
        ``attrs["schema_version"]`` (:data:`geomxai.schema.SCHEMA_VERSION`). Variables that are
        absent are left out of the report.
    out_dir : path-like
        Created if needed; receives ``index.html`` and ``figures/``. Other files there (a
        study's ``results.nc``, ``tables.md``) are kept.

    Returns
    -------
    Path
        The path of ``index.html``.

    Notes
    -----
    The report is written whole or not at all (:func:`geomxai._fs.atomic_folder`): it is
    built in a temporary folder beside ``out_dir`` (``.<name>.<host>-<pid>-<random>.tmp``),
    which then takes ``out_dir``'s place in one step, so a full disk or a crash mid-way leaves
    the old report exactly as it was, never a page with some figures replaced. Leftover
    temporary folders of a killed build are removed by the next one.

    Raises
    ------
    ResultsVersionError
        Results of another layout, or without ``schema_version`` (written before layouts were
        numbered: layout 1); the message names the layout and how to rebuild them. Nothing is
        written.
    ValueError
        Results without a ``regime`` dim.
    OSError
        A full disk, a read-only folder, ..., naming the file; the old report is unchanged.
    """
    check_schema_version(results, where="the results Dataset", fix=REBUILD)
    return write_report(results, out_dir)

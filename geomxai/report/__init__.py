"""Figures and HTML reports."""

from geomxai.report._across import build_across_report
from geomxai.report._build import REBUILD, build_report
from geomxai.report._link import plot_geometry_fidelity, plot_link
from geomxai.report._report import seed_interval
from geomxai.report._study import ResultsVersionError, build_study_report, check_schema_version
from geomxai.report._style import REGIME_COLOURS, regime_colour

__all__ = [
    "REBUILD",
    "REGIME_COLOURS",
    "ResultsVersionError",
    "build_across_report",
    "build_report",
    "build_study_report",
    "check_schema_version",
    "plot_geometry_fidelity",
    "plot_link",
    "regime_colour",
    "seed_interval",
]

"""Figures and HTML reports."""

from geomxai.report._report import build_report
from geomxai.report._style import REGIME_COLOURS, regime_colour

__all__ = ["REGIME_COLOURS", "build_report", "regime_colour"]

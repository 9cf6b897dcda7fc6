"""Fixtures of the report tests: synthetic results (``synthetic_results.make_results``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
from synthetic_results import make_results

from geomxai.report import build_report


@pytest.fixture
def results() -> xr.Dataset:
    """Synthetic results of two regimes and two seeds (see :func:`make_results`); a fresh copy."""
    return make_results()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report of :func:`make_results`' Dataset: its ``index.html``."""
    return build_report(make_results(), tmp_path_factory.mktemp("report"))

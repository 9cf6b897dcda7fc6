"""scripts/check_report.py --screenshot captures the whole page, every section (issue 26)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_report.py"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def long_report(tmp_path_factory):
    """A report taller than a screen: one small model's analysis with its figures."""
    import torch

    from geomxai.models import build_model
    from geomxai.report import build_report
    from geomxai.study import AnalysisOptions, analyze_model

    torch.manual_seed(0)
    model = build_model("cnn2", in_channels=3, num_classes=4, image_size=16).eval()
    x, y = torch.rand(64, 3, 16, 16), torch.arange(64) % 4
    options = AnalysisOptions(probe_size=64, fractions=3, n_examples=2)
    with pytest.warns(UserWarning):
        results = analyze_model(model, (x, y), options=options, progress=False)
    return build_report(results, tmp_path_factory.mktemp("report"))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_the_screenshot_is_as_tall_as_the_page(long_report, tmp_path):
    shot = tmp_path / "shot.png"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(long_report), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    width, height = _png_size(shot)
    # The whole page, every section: as tall as the page the probe measured at this width
    # (a fixed window cut a study's report after 9 of its 17 sections).
    assert result["height"] > 900 and result["headings"] >= 4
    # Exactly the page: neither a fixed window that cuts a tall page nor one padded below it.
    assert (width, height) == (1200, result["height"])


def test_the_window_holds_the_measured_page():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from check_report import screenshot_height
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert screenshot_height({"height": 12345}) == 12345
    assert screenshot_height({"height": 10}) == 900
    assert screenshot_height({}) == 900

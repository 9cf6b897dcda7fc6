"""The report under faults and odd input (issue 15): a full disk mid-build leaves the old report
byte for byte, leftovers of a killed build are cleaned, names that are mathtext to matplotlib
are drawn as written, and results without example maps still give a report."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.text
import numpy as np
import pytest
from _internals import fs as util
from _internals import report_report as report_module
from synthetic_results import check_figures, make_results, read_page

from geomxai.report import build_report, plot_geometry_fidelity

ODD_NAMES = (r"$\foo$.pt", "a_$x^2$")
"""A checkpoint name whose mathtext fails to parse, and one it would typeset."""


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(params=["exchange", "rename"])
def swap(request, monkeypatch) -> str:
    """Both ways a report is swapped in: one atomic exchange (Linux), or aside-then-in."""
    if request.param == "rename":
        monkeypatch.setattr(util, "_exchange", lambda a, b: False)
    elif util._renameat2() is None:
        pytest.skip("no renameat2 on this system")
    return request.param


def _full_disk_at(monkeypatch, call: int) -> list[str]:
    """Make the ``call``-th figure save write half a PNG and then raise ENOSPC, as a full disk
    does; returns the paths it was asked to write."""
    real_save = report_module.save
    asked: list[str] = []

    def save(fig, path):
        asked.append(str(path))
        if len(asked) == call:
            Path(path).write_bytes(b"\x89PNG\r\n\x1a\n half a figure")
            import matplotlib.pyplot as plt

            plt.close(fig)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(fig, path)

    monkeypatch.setattr(report_module, "save", save)
    return asked


class TestFullDisk:
    def test_the_old_report_is_kept_byte_for_byte(self, tmp_path, monkeypatch, swap):
        out = tmp_path / "report"
        build_report(make_results(seed=0), out)
        (out / "results.nc").write_bytes(b"the study's results")  # not the report's: kept
        before = _tree(out)
        assert "index.html" in before and sum(k.startswith("figures/") for k in before) >= 8
        asked = _full_disk_at(monkeypatch, 3)
        with pytest.raises(OSError) as err:
            build_report(make_results(seed=1), out)
        assert err.value.errno == errno.ENOSPC
        assert err.value.filename == str(out)  # the destination, not a temporary name
        assert len(asked) == 3  # the build stopped at the failing figure
        assert _tree(out) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder

    def test_a_rebuild_replaces_the_whole_report(self, tmp_path, monkeypatch, swap):
        out, fresh = tmp_path / "report", tmp_path / "fresh"
        build_report(make_results(seed=0), out)
        (out / "figures" / "from_an_older_version.png").write_bytes(b"old")
        (out / "results.nc").write_bytes(b"the study's results")
        (out / "notes").mkdir()
        (out / "notes" / "a.md").write_text("mine")
        _full_disk_at(monkeypatch, 5)
        with pytest.raises(OSError):
            build_report(make_results(seed=1), out)
        monkeypatch.undo()
        if swap == "rename":
            monkeypatch.setattr(util, "_exchange", lambda a, b: False)
        index = build_report(make_results(seed=1), out)
        assert index == out / "index.html"
        build_report(make_results(seed=1), fresh)
        after, expected = _tree(out), _tree(fresh)
        # Every part of the report is the new one; the files that are not the report's stay.
        assert {
            k: v for k, v in after.items() if k != "results.nc" and not k.startswith("notes")
        } == expected
        assert after["results.nc"] == b"the study's results"
        assert after["notes/a.md"] == b"mine"
        check_figures(read_page(index), index)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "report"]

    def test_an_error_naming_a_figure_names_it_in_the_report_folder(self, tmp_path, monkeypatch):
        def save(fig, path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(report_module, "save", save)
        with pytest.raises(OSError) as err:
            build_report(make_results(), tmp_path / "report")
        assert err.value.filename == str(tmp_path / "report" / "figures" / "masking_curves.png")

    def test_a_failed_first_build_leaves_no_folder(self, tmp_path, monkeypatch):
        _full_disk_at(monkeypatch, 1)
        with pytest.raises(OSError):
            build_report(make_results(), tmp_path / "new" / "report")
        assert list((tmp_path / "new").iterdir()) == []

    def test_the_report_folder_gets_an_ordinary_mode(self, tmp_path):
        mask = os.umask(0o022)
        try:
            index = build_report(make_results(), tmp_path / "report")
        finally:
            os.umask(mask)
        assert index.parent.stat().st_mode & 0o777 == 0o755
        assert index.stat().st_mode & 0o777 == 0o644

    def test_a_folder_that_cannot_move_is_rebuilt_entry_by_entry(self, tmp_path, monkeypatch):
        """The current folder (or a mount point): the report's entries are swapped in place."""
        monkeypatch.chdir(tmp_path)
        build_report(make_results(seed=0), ".")
        Path("results.nc").write_bytes(b"kept")
        before = _tree(tmp_path)
        _full_disk_at(monkeypatch, 4)
        with pytest.raises(OSError):
            build_report(make_results(seed=1), ".")
        assert _tree(tmp_path) == before
        monkeypatch.undo()
        monkeypatch.chdir(tmp_path)
        build_report(make_results(seed=1), ".")
        assert _tree(tmp_path) != before
        assert Path("results.nc").read_bytes() == b"kept"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "index.html", "results.nc"]


def test_leftovers_of_a_killed_build_are_cleaned(tmp_path):
    out = tmp_path / "report"
    dead, host = _dead_pid(), util._host_tag()
    stale = tmp_path / f".report.{host}-{dead}-a1b2c3d4.tmp"
    live = tmp_path / f".report.{host}-{os.getppid()}-a1b2c3d4.tmp"  # being written right now
    other = tmp_path / f".other.{host}-{dead}-a1b2c3d4.tmp"  # another folder's
    users = [tmp_path / ".report.a1b2c3d4.tmp", tmp_path / ".report.tmp", tmp_path / "report.tmp"]
    for folder in (stale, live, other, *users):
        (folder / "figures").mkdir(parents=True)
        (folder / "index.html").write_text("half")
    build_report(make_results(), out)
    assert not stale.exists()
    assert all(p.is_dir() for p in (live, other, *users))
    assert (out / "index.html").is_file()


def _unescaped_dollars(text: str) -> int:
    """The ``$`` that matplotlib would read as mathtext delimiters (``\\$`` is a literal one)."""
    return text.count("$") - text.count(r"\$")


class TestMathtextNames:
    @pytest.fixture
    def odd(self):
        ds = make_results()
        ds = ds.assign_coords(regime=list(ODD_NAMES), layer=["a_$x^2$"])
        ds.attrs["saliency_method"] = r"callable:$\foo$"
        return ds

    def test_names_are_drawn_as_written(self, odd, tmp_path, monkeypatch):
        drawn: list[str] = []
        real_save = report_module.save

        def save(fig, path):
            drawn.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
            return real_save(fig, path)  # draws: an unescaped "$\foo$" would raise here

        monkeypatch.setattr(report_module, "save", save)
        index = build_report(odd, tmp_path)
        assert all(_unescaped_dollars(t) == 0 for t in drawn), [t for t in drawn if "$" in t]
        for name in ODD_NAMES:
            assert name.replace("$", r"\$") in drawn  # each regime's legend or axis label
        assert r"\$\foo\$" in " ".join(drawn)  # the method, in the saliency figure's title
        page = read_page(index)
        check_figures(page, index)
        assert r"callable:$\foo$ saliency" in page.text

    def test_the_link_scatter_names_a_layer_as_written(self, odd):
        import matplotlib.pyplot as plt

        ax = plot_geometry_fidelity(odd, layer="a_$x^2$")
        try:
            ax.figure.canvas.draw()
            texts = [t.get_text() for t in ax.figure.findobj(matplotlib.text.Text)]
            assert all(_unescaped_dollars(t) == 0 for t in texts)
            assert ax.get_xlabel() == r"effective rank (a_\$x^2\$)"
        finally:
            plt.close(ax.figure)


NO_MAPS = "There are no example saliency maps in these results"


class TestNoExampleMaps:
    @pytest.mark.parametrize(
        "strip",
        [
            pytest.param(lambda ds: ds.isel(example=slice(0, 0)), id="zero-examples"),
            pytest.param(lambda ds: ds.drop_vars("saliency_maps"), id="no-saliency-maps"),
            pytest.param(
                lambda ds: ds.assign(saliency_maps=ds["saliency_maps"] * np.nan), id="all-nan"
            ),
        ],
    )
    def test_the_report_says_there_are_none(self, tmp_path, strip):
        ds = strip(make_results())
        index = build_report(ds, tmp_path)
        page = read_page(index)
        assert "Saliency maps (Fig. 2/4 form)" in page.headings
        assert NO_MAPS in page.text
        assert not any("saliency_grid" in s or "saliency_boxplot" in s for s in page.images)
        check_figures(page, index)

    def test_a_real_analysis_that_kept_no_maps(self, tmp_path):
        import torch
        from torch import nn

        from geomxai.study import AnalysisOptions, analyze_model

        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        net.append(nn.Linear(4, 2))
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 2, (20,), generator=g)
        options = AnalysisOptions(probe_size=20, layers=("3",), n_examples=0, fractions=3)
        with pytest.warns(UserWarning):  # the probe is small; the analysis says so
            results = analyze_model(net, (x, y), options=options)
        assert results.sizes["example"] == 0
        page = read_page(build_report(results, tmp_path))
        assert NO_MAPS in page.text

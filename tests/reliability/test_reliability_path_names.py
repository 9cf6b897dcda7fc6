"""Names that could escape their folder: a study name is one folder name, and empty paths are
refused before anything is written."""

from __future__ import annotations

import json
import os

import pytest
from _internals import check_nonempty_path, check_path_component
from hypothesis import given
from hypothesis import strategies as st
from reliability_helpers import TRAIN_FIELDS, one_error_line

from geomxai.pipeline import run_study

ESCAPING = ["../../x", "../x", "a/b", "/abs", "", ".", "..", "a\\b", "a\0b"]


def _profile(tmp_path, name=None):
    path = tmp_path / "p.toml"
    fields = {**TRAIN_FIELDS, "out_dir": "unused"}
    study = "" if name is None else f"name = {json.dumps(name)}\n"
    path.write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
        + '[study]\nregimes = ["regular"]\n'
        + study
    )
    return path


class TestStudyNames:
    @pytest.mark.parametrize("name", ESCAPING)
    def test_a_name_that_leaves_its_folder_is_refused_before_any_write(self, tmp_path, name):
        work = tmp_path / "work"
        work.mkdir()
        with pytest.raises(
            ValueError,
            match=r"\[study\] name (of p.toml must be one folder name|must be a non-empty)",
        ):
            run_study(str(_profile(tmp_path, name)), runs_root=work / "r", reports_root=work / "s")
        assert sorted(tmp_path.iterdir()) == [tmp_path / "p.toml", work]
        assert list(work.iterdir()) == []

    def test_the_cli_says_so_in_one_line(self, tmp_path, cli):
        status, text = cli(
            "study", "--profile", _profile(tmp_path, "../../x"), "--runs", tmp_path / "r"
        )
        assert status == 2 and "'../../x'" in one_error_line(text)

    @pytest.mark.parametrize("flag", ["--runs", "--reports"])
    def test_empty_roots_are_refused(self, tmp_path, cli, flag):
        status, text = cli("study", "--profile", _profile(tmp_path, "ok"), flag, "")
        assert status == 2 and "must be a path; got an empty one" in one_error_line(text)

    def test_a_non_string_name_is_refused(self, tmp_path):
        with pytest.raises(ValueError, match=r"\[study\] name must be a non-empty string; got 3"):
            run_study(str(_profile(tmp_path, 3)), runs_root=tmp_path / "r")


class TestEmptyOutputPaths:
    def test_analyze_out_empty(self, tmp_path, run, cli):
        status, text = cli("analyze", run, "--out", "")
        assert status == 2 and "--out must be a path" in one_error_line(text)
        assert not (run / "analysis").exists()

    def test_report_out_empty(self, tmp_path, cli):
        status, text = cli("report", tmp_path / "results.nc", "--out", "")
        assert status == 2 and "--out must be a path" in one_error_line(text)

    def test_analyze_cache_empty(self, run, cli, tmp_path):
        status, text = cli("analyze", run, "--cache", "", "--out", tmp_path / "r.nc")
        assert status == 2 and "--cache must be a path" in one_error_line(text)

    def test_train_out_dir_empty(self, tmp_path, cli, monkeypatch):
        monkeypatch.chdir(tmp_path)
        (tmp_path / "c.toml").write_text('dataset = "digits"\n')
        status, text = cli("train", "--config", "c.toml", "--set", "out_dir=")
        assert status == 2 and "out_dir" in one_error_line(text)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


@given(st.text(max_size=12))
def test_every_accepted_name_stays_a_direct_child_of_its_folder(name):
    base = os.path.join(os.sep, "base", "folder")
    try:
        check_path_component(name, "name")
    except ValueError:
        return
    joined = os.path.normpath(os.path.join(base, name))
    assert os.path.dirname(joined) == base and os.path.basename(joined) == name


@pytest.mark.parametrize("value", ["", "  ", None])
def test_empty_paths_are_refused(value):
    with pytest.raises(ValueError, match="--out must be a path"):
        check_nonempty_path(value, "--out")

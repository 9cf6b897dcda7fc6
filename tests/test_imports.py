"""Import cost follows use: the lazy root, and no part importing the one above it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import geomxai


def _loaded_after(statement: str) -> list[str]:
    """The geomxai modules in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    code = (
        f"import json, sys\n{statement}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('geomxai'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _under(modules: list[str], *packages: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_the_root_package_loads_nothing():
    assert _loaded_after("import geomxai") == ["geomxai"]


@pytest.mark.parametrize(
    "package", ["geometry", "attribution", "collect", "dynamics", "whitening", "models"]
)
def test_metrics_and_parts_load_no_trainer(package):
    loaded = _loaded_after(f"import geomxai.{package}")
    assert _under(loaded, "geomxai.train", "geomxai.study", "geomxai.report") == []


def test_study_loads_neither_trainer_nor_report():
    loaded = _loaded_after("import geomxai.study")
    assert _under(loaded, "geomxai.train", "geomxai.report", "geomxai.pipeline") == []


def test_report_loads_neither_study_nor_trainer():
    loaded = _loaded_after("import geomxai.report")
    assert _under(loaded, "geomxai.train", "geomxai.study", "geomxai.pipeline") == []


def test_the_run_directory_reader_is_a_leaf():
    assert _loaded_after("import geomxai.rundir") == ["geomxai", "geomxai.rundir"]


def test_root_names_resolve_on_use():
    from geomxai.train import _checkpoint

    assert geomxai.load_checkpoint is _checkpoint.load_checkpoint
    assert geomxai.CheckpointError is _checkpoint.CheckpointError
    assert geomxai.__version__
    assert geomxai.rundir.read_run is not None  # subpackages and modules are attributes
    assert {"load_checkpoint", "study", "pipeline"} <= set(dir(geomxai))
    with pytest.raises(AttributeError, match="did you mean 'load_checkpoint'"):
        _ = geomxai.load_chekpoint


def test_moved_names_still_resolve():
    import geomxai.collect
    import geomxai.moments
    import geomxai.pipeline
    import geomxai.study

    assert geomxai.collect.FeatureMoments is geomxai.moments.FeatureMoments
    assert geomxai.study.run_study is geomxai.pipeline.run_study
    assert geomxai.study.find_profile is geomxai.pipeline.find_profile
    with pytest.raises(AttributeError):
        _ = geomxai.study.no_such_name


def _third_party_after(code: str) -> list[str]:
    """The heavy optional libraries in ``sys.modules`` after ``code`` runs in a fresh process."""
    heavy = ("timm", "captum", "dask", "xarray", "torchvision", "scipy", "pandas", "matplotlib")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, sys\n{code}\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_layers_command_loads_only_what_it_uses():
    # `geomxai layers cnn2` builds a model and lists its modules: none of these is needed, and
    # together they cost seconds of start-up (issue 26).
    loaded = _third_party_after("from geomxai.cli import main\nmain(['layers', 'cnn2'])")
    assert loaded == []


def test_lazy_packages_still_resolve_every_public_name():
    import geomxai.collect
    import geomxai.study

    for package in (geomxai.study, geomxai.collect):
        for name in package.__all__:
            assert getattr(package, name) is not None
        assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="did you mean 'analyze_model'"):
        _ = geomxai.study.analyze_modle

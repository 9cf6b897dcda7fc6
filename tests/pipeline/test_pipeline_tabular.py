"""The tabular design (configs/breast-cancer-mlp.toml) end to end, in a tiny version: its own
training, analysis and statistics settings, one seed, two cells, two epochs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import xarray as xr

from geomxai.data import load_dataset
from geomxai.pipeline import load_design, run_design

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "configs" / "breast-cancer-mlp.toml"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return repr(v)


def _toml(tables: dict) -> str:
    """The few TOML shapes a design uses: tables of scalars and lists, sub-tables, arrays of
    tables."""
    lines: list[str] = []

    def table(name: str, body: dict) -> None:
        lines.append(f"[{name}]")
        subs = {k: v for k, v in body.items() if isinstance(v, dict)}
        lines.extend(f"{k} = {_value(v)}" for k, v in body.items() if k not in subs)
        for k, v in subs.items():
            table(f"{name}.{k}", v)

    for name, body in tables.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{name}]]")
                lines.extend(f"{k} = {_value(v)}" for k, v in item.items())
        else:
            table(name, body)
    return "\n".join(lines) + "\n"


def tiny_design(tmp_path: Path, *, fills=None) -> Path:
    """The committed design cut to 1 seed, 2 cells (regular, saliencydecor) and 2 epochs, its
    statistics to the one contrast those cells have; every other setting as committed."""
    raw = tomllib.loads(DESIGN.read_text())
    raw["study"].update(seeds=[0], runs=str(tmp_path / "runs"), out=str(tmp_path / "out"))
    raw["train"]["epochs"] = 2
    raw["cells"] = [c for c in raw["cells"] if c["name"] in ("regular", "saliencydecor")]
    raw["analysis"]["n_examples"] = 2
    if fills is not None:
        raw["analysis"]["fills"] = fills
    raw["statistics"] = {
        "treatment": "saliencydecor",
        "baselines": ["regular"],
        "power": {"contrasts": ["saliencydecor-regular"], "metrics": ["test_acc"]},
    }
    path = tmp_path / "tiny-breast-cancer.toml"
    path.write_text(_toml(raw))
    return path


def test_the_design_is_valid_and_as_issue_25_asks():
    design = load_design(DESIGN)
    assert design.train["dataset"] == "breast-cancer" and design.train["model"] == "mlp"
    assert len(design.seeds) >= 5
    regimes = {c.name: c.regime for c in design.cells}
    assert {"regular", "sgt", "dbn", "saliencydecor"} <= set(regimes.values())
    assert design.statistics.factorial is not None and design.statistics.power_contrasts
    (dose,) = design.statistics.doses
    weights = [design.config(c, 0).decor_weight for c in dose.cells]
    assert weights[0] == 0 and sum(w > 0 for w in weights) >= 3
    assert design.control and design.keep_checkpoint and design.checkpoints == "spread"
    assert list(design.analysis["saliency_methods"]) == ["abs_gradient", "integrated_gradients"]
    # The fills that do not leak the class, in training and in the analysis.
    assert design.train["mask_fill"] == "zero"
    assert "uniform" not in design.analysis.get("fills", [design.analysis.get("fill")])


@pytest.mark.slow  # trains and analyses two tiny runs (seconds each)
def test_the_tabular_design_runs_end_to_end(tmp_path):
    path = tiny_design(tmp_path)
    design = load_design(path, runs_dir=tmp_path / "runs", out_dir=tmp_path / "out")
    index = run_design(design)
    out = tmp_path / "out"
    assert index == out / "index.html" and index.is_file()
    assert sorted(p.name for p in (out / "runs").glob("*.nc")) == [
        "regular-s0.nc",
        "saliencydecor-s0.nc",
    ]
    bundle = load_dataset("breast-cancer")
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        assert set(ds["cell"].values) == {"regular", "saliencydecor"}
        assert (ds["test_acc"] > 0.8).all()  # two epochs of an MLP: far above chance (0.63)
        assert "contrasts_verdict" in ds
        # One fidelity metric per saliency method and fill (docs/study.md).
        for method in ("abs_gradient", "integrated_gradients"):
            for fill in ("zero", "mean"):
                assert f"morf_auc__{method}__{fill}" in ds.data_vars
        configs = json.loads(ds.attrs["run_configs"])
        assert {c["model"] for c in configs.values()} == {"mlp"}
        assert {c["mask_fill"] for c in configs.values()} == {"zero"}
        # No degeneracy warning is recorded, for either fill or method.
        assert json.loads(ds.attrs["run_warnings"]) == {}
    for run in (out / "runs").glob("*.nc"):
        with xr.open_dataset(run, engine="h5netcdf") as result:
            assert json.loads(result.attrs.get("warnings") or "[]") == [], run.name
    tables = (out / "tables.md").read_text()
    # The setting is the design's: breast-cancer, its true row counts, the mlp.
    assert f"Data: breast-cancer; {len(bundle.train)} training rows" in tables
    assert f"{len(bundle.test)} test rows" in tables
    assert "Model: mlp; 2 epochs" in tables
    assert "Fashion-MNIST" not in index.read_text()

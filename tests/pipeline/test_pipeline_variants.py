"""A design that lists several saliency methods and fills: its runs table has one metric per
method and fill, and the contrasts give a verdict for each (issue 23)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from geomxai import schema
from geomxai.pipeline import load_design, run_design

METHODS = ("abs_gradient", "integrated_gradients")
FILLS = ("zero", "uniform")

DESIGN = """
[study]
name = "tiny-variants"
title = "A tiny digits study of two methods and two fills"
seeds = [0]

[train]
dataset = "digits"
model = "cnn2"
epochs = 1
train_subset = 240
test_subset = 120
batch_size = 40
lr = 0.05
device = "cpu"

[[cells]]
name = "regular"
regime = "regular"

[[cells]]
name = "sgt"
regime = "sgt"

[analysis]
probe_size = 64
fractions = 4
top_k = 4
n_examples = 2
checkpoints = "all"
keep = "final"
saliency_methods = ["abs_gradient", "integrated_gradients"]
fills = ["zero", "uniform"]
saliency_kwargs = { n_steps = 4 }

[statistics]
treatment = "sgt"
baselines = ["regular"]
fidelity = ["morf_auc", "gini"]
geometry = ["effective_rank"]
"""


@pytest.mark.filterwarnings("ignore::geomxai.study.ProbeSizeWarning")
def test_a_design_of_two_methods_and_two_fills_gives_a_verdict_per_method_and_fill(tmp_path):
    path = tmp_path / "variants.toml"
    path.write_text(DESIGN)
    out = tmp_path / "out"
    design = load_design(path, runs_dir=tmp_path / "runs", out_dir=out)
    index = run_design(design)
    with xr.open_dataset(out / "runs" / "regular-s0.nc", engine="h5netcdf") as run:
        assert run["morf_auc"].dims == ("epoch", "saliency_method", "fill")
        assert run["gini"].dims == ("epoch", "saliency_method")
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        morf = [schema.variant_name("morf_auc", m, f) for m in METHODS for f in FILLS]
        gini = [schema.variant_name("gini", m) for m in METHODS]
        contrasts = [str(m) for m in ds["metric"].values]
        assert set(morf + gini) <= set(contrasts)
        assert "morf_auc" not in contrasts and "gini" not in contrasts
        # Each variant is a metric of the runs table with a verdict of its own.
        for name in morf + gini:
            assert ds[name].dims == ("run",) and np.isfinite(ds[name]).all(), name
        verdicts = ds["contrasts_verdict"].sel(metric=morf + gini)
        assert verdicts.sizes["metric"] == 6 and all(str(v) for v in verdicts.values.ravel())
        # The runs table's values are the per-run slices'.
        with xr.open_dataset(out / "runs" / "sgt-s0.nc", engine="h5netcdf") as run:
            value = run["morf_auc"].isel(epoch=-1).sel(saliency_method=METHODS[1], fill=FILLS[1])
            row = ds.sel(run="sgt-s0")[schema.variant_name("morf_auc", METHODS[1], FILLS[1])]
            assert float(row) == float(value)
        assert json.loads(ds.attrs["design"])["analysis"]["fills"] == list(FILLS)
    # The report names each variant by its method and fill.
    assert "MoRF AUC (integrated gradients, uniform fill)" in index.read_text()
    # ... and the verdict's questions answer from the variants: no empty answer where the
    # results hold a metric only as its method/fill variants.
    verdict = (out / "tables.md").read_text().split("## Verdict", 1)[1].split("\n## ", 1)[0]
    fidelity = next(
        line for line in verdict.splitlines() if "improve fidelity over regular" in line
    )
    assert fidelity.rstrip(" |").count(": ") >= len(morf + gini), fidelity
    assert "MoRF AUC (|gradient|, zero fill)" in fidelity.replace("\\|", "|")
    # Each run's live units are shown beside entanglement on live units and over all units.
    units = (out / "tables.md").read_text().split("## Live units, run by run", 1)[1]
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        live, dead = (int(ds[n].sel(run="sgt-s0")) for n in ("n_live_units", "n_dead_units"))
        assert np.isfinite(ds["entanglement_all_units"]).all()
    row = next(line for line in units.splitlines() if line.startswith("| sgt-s0 |"))
    assert f"| {live} of {live + dead} |" in row, row
    assert (
        "|gradient| and integrated gradients saliency; masking with zero fill and uniform fill"
        in index.read_text()
    )

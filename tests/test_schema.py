"""geomxai.schema: one declaration per result variable, its lookups and its CF-style attrs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from geomxai import schema


def test_every_variable_is_declared_once_with_known_values():
    assert len(schema.VARIABLES) == len({v.name for v in schema.VARIABLES.values()})
    for name, v in schema.VARIABLES.items():
        assert v.name == name
        assert v.block in schema.BLOCKS and v.direction in schema.DIRECTIONS, name
        assert v.role in schema.ROLES and v.label, name
        assert isinstance(v.dims, tuple) and all(isinstance(d, str) for d in v.dims), name
        assert not {"regime", "seed", "epoch"} & set(v.dims), name  # per checkpoint
    with pytest.raises(TypeError):
        schema.VARIABLES["x"] = schema.variable("gini")  # read-only


def test_a_bad_declaration_is_refused():
    with pytest.raises(ValueError, match="block must be one of"):
        schema.Variable("x", (), "geometery", "x")
    with pytest.raises(ValueError, match="direction must be one of"):
        schema.Variable("x", (), "geometry", "x", direction="up")
    with pytest.raises(ValueError, match="role must be one of"):
        schema.Variable("x", (), "geometry", "x", role="both")


def test_link_defaults_keep_their_order():
    """The link's default rows and columns, in the order results files have always had; the
    dynamics are linked by their whole-run summaries (issue 23), not by the last pair's swap
    rate and stability (kept as variables); alpha-ReQ is stored only."""
    geometry = schema.geometry_metrics()
    assert geometry[:6] == (
        "effective_rank",
        "participation_ratio",
        "mean_abs_corr",
        "corr_offdiag_fro",
        "spectrum_alpha",
        "entanglement",
    )
    assert geometry[-3:] == (
        "mean_nondegenerate_swap_rate",
        "subspace_settle_step",
        "cka_final_auc",
    )
    for name in ("swap_rate", "nondegenerate_swap_rate", "saliency_stability"):
        assert schema.variable(name).role is None, name
    assert schema.variable("nondegenerate_swap_rate").per_checkpoint
    assert not schema.variable("cka_final_auc").per_checkpoint
    assert schema.variable("spectrum_alpha_req").role is None
    assert schema.fidelity_metrics() == (
        "morf_auc",
        "lerf_auc",
        "fidelity_gap",
        "topq_contrast",
        "gini",
        "mean_saliency_stability",
        "mask_auroc",
        "mass_inside",
        "pointing_game",
        "deletion_auc",
        "insertion_auc",
    )
    # A fidelity metric judges: each says which way is better; geometry metrics describe.
    assert all(schema.direction(f) in ("higher", "lower") for f in schema.fidelity_metrics())
    assert all(schema.direction(g) is None for g in schema.geometry_metrics())


def test_probabilistic_faithfulness_is_declared_as_a_fidelity_block():
    """RISE's deletion (lower is better) and insertion (higher) areas, their mean curves over
    ``fraction`` and per-sample areas over ``sample`` (issue 16), with no probe minimum."""
    assert schema.BLOCKS.index("faithfulness_probability") == schema.BLOCKS.index("masking") + 1
    assert schema.names("faithfulness_probability") == (
        "deletion_curve",
        "deletion_auc",
        "insertion_curve",
        "insertion_auc",
        "deletion_auc_per_sample",
        "insertion_auc_per_sample",
    )
    assert schema.direction("deletion_auc") == "lower"
    assert schema.direction("insertion_auc") == "higher"
    assert schema.variable("deletion_curve").dims == ("fraction",)
    assert schema.variable("insertion_auc_per_sample").dims == ("sample",)
    assert schema.variable("deletion_auc_per_sample").role is None  # not linked: one per sample
    assert all(schema.min_samples(n) is None for n in schema.names("faithfulness_probability"))
    assert schema.label("insertion_auc") == "insertion AUC (target probability)"


def test_lookups():
    assert schema.variable("morf_auc").direction == "lower"
    assert schema.direction("lerf_auc") == "higher" and schema.direction("nonexistent") is None
    assert schema.label("fidelity_gap") == "LeRF − MoRF"
    assert schema.label("my_metric") == "my metric"  # undeclared: its own name
    assert schema.names("localisation") == ("mask_auroc", "mass_inside", "pointing_game")
    assert schema.names("training")[0] == "test_acc"
    with pytest.raises(KeyError, match="did you mean 'morf_auc'"):
        schema.variable("morf_acu")
    with pytest.raises(ValueError, match="block must be one of"):
        schema.names("geometri")


def test_annotate_writes_cf_attrs_on_a_copy():
    ds = xr.Dataset(
        {
            "morf_auc": 0.3,
            "morf_auc_paper": 3000.0,
            "effective_rank": ("layer", [2.0]),
            "spearman_low": xr.DataArray(0.1, attrs={"long_name": "lower end of the 80% CI"}),
            "mine": xr.DataArray(1.0, attrs={"nan_reason": "kept"}),
        }
    )
    ds["gini"] = xr.DataArray(0.5, attrs={"nan_reason": "kept too"})
    out = schema.annotate(ds)
    assert out["morf_auc"].attrs == {
        "long_name": "MoRF AUC",
        "block": "masking",
        "direction": "lower",
    }
    assert out["morf_auc_paper"].attrs["units"] == "percent^2"
    assert "direction" not in out["effective_rank"].attrs  # None is left out, not written
    assert out["spearman_low"].attrs["long_name"] == "lower end of the 80% CI"  # kept
    assert out["spearman_low"].attrs["block"] == "link"
    assert out["mine"].attrs == {"nan_reason": "kept"}
    assert (
        out["gini"].attrs["nan_reason"] == "kept too" and out["gini"].attrs["block"] == "saliency"
    )
    assert ds["morf_auc"].attrs == {} and ds["gini"].attrs == {"nan_reason": "kept too"}
    assert np.shares_memory(out["effective_rank"].values, ds["effective_rank"].values)
    with pytest.raises(TypeError, match="Dataset"):
        schema.annotate(ds["morf_auc"])


def test_annotated_attrs_survive_a_netcdf_file(tmp_path):
    ds = schema.annotate(
        xr.Dataset({name: xr.DataArray(np.zeros([1] * len(v.dims)), dims=v.dims)
                    for name, v in schema.VARIABLES.items()})
    )  # fmt: skip
    path = tmp_path / "r.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        for name in schema.VARIABLES:
            assert back[name].attrs == schema.cf_attrs(name), name
    json.dumps(schema.cf_attrs("morf_auc"))  # plain strings only


def test_importing_the_schema_loads_no_torch():
    code = "import sys, geomxai.schema; print(any(m.startswith('torch') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""Several saliency methods and fills in one analysis (issue 23): each (method, fill) slice
equals the analysis of that method and fill alone; the default layout is unchanged; a runs
table reads one metric per method and fill."""

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from geomxai import schema
from geomxai.attribution import SALIENCY_METHODS
from geomxai.study import (
    AnalysisOptions,
    Probe,
    epoch_record,
    measure,
    run_record,
    variant_names,
    warnings_of,
)

pytestmark = pytest.mark.filterwarnings("ignore::geomxai.study.ProbeSizeWarning")

METHODS = ("abs_gradient", "integrated_gradients")
FILLS = ("zero", "uniform")
K = 4


class IntensityReader(nn.Module):
    """Reads the class from a weighted mean intensity (tests/study/test_study_degeneracy.py):
    perfect on :func:`probe` images, and the ``uniform`` fill leaks the class to it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Flatten()
        self.register_buffer("centres", (torch.arange(K) + 0.5) / K)
        weights = torch.rand(64, generator=torch.Generator().manual_seed(5)) + 0.1
        self.register_buffer("weights", weights / weights.sum())

    def forward(self, x):
        mean = (self.body(x) * self.weights).sum(dim=1, keepdim=True)
        return -100.0 * (mean - self.centres) ** 2


class TinyConv(nn.Module):
    """A random two-layer conv net: its maps differ by method, its curves by fill."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(4 * 8 * 8, K)

    def forward(self, x):
        return self.head(self.body(x))


def probe(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    x = (y[:, None, None, None] + torch.rand(n, 1, 8, 8, generator=g)) / K
    return Probe(x, y, dataset="planted")


def options(**kw):
    base = {"probe_size": 60, "fractions": 4, "top_k": 2, "n_examples": 2}
    return AnalysisOptions(**base, saliency_kwargs={"n_steps": 4}, **kw)


def _same(a: xr.DataArray, b: xr.DataArray, name: str) -> None:
    np.testing.assert_array_equal(np.asarray(a.values), np.asarray(b.values), err_msg=name)


@pytest.fixture(scope="module")
def analysed():
    model, p = TinyConv(), probe()
    multi = measure(model, p, options(saliency_methods=METHODS, fills=FILLS))
    single = {
        (m, f): measure(model, p, options(saliency_method=m, fill=f))
        for m in METHODS
        for f in FILLS
    }
    return multi, single


def test_two_methods_and_two_fills_equal_four_single_analyses(analysed):
    multi, single = analysed
    assert list(multi["saliency_method"].values) == list(METHODS)
    assert list(multi["fill"].values) == list(FILLS)
    masking = set(schema.names("masking"))
    # Every saliency variable the schema declares (masking, faithfulness, saliency, localisation).
    saliency_blocks = ("masking", "faithfulness_probability", "saliency", "localisation")
    for name in (n for block in saliency_blocks for n in schema.names(block)):
        if name not in multi:
            continue
        # The masking variables have both dims; the other saliency metrics the method only.
        assert "saliency_method" in multi[name].dims, name
        assert ("fill" in multi[name].dims) == (name in masking), name
        for (m, f), ds in single.items():
            sel = {"saliency_method": m, **({"fill": f} if name in masking else {})}
            _same(multi[name].sel(sel, drop=True), ds[name], f"{name} {m} {f}")
    assert {"morf_auc", "fidelity_gap", "deletion_auc", "gini"} <= set(multi.data_vars)
    # The maps differ by method and the curves by fill: the slices are not one value repeated.
    assert len({float(multi.gini.sel(saliency_method=m)) for m in METHODS}) == 2
    assert (
        len({float(multi.morf_auc.sel(saliency_method="abs_gradient", fill=f)) for f in FILLS}) == 2
    )
    # The rest (geometry, accuracy, entanglement) and the example maps: the first method's.
    first = single[(METHODS[0], FILLS[0])]
    for name in ("effective_rank", "probe_acc", "entanglement", "saliency_maps", "probe_saliency"):
        _same(multi[name], first[name], name)
    assert multi.attrs["saliency_method"] == METHODS[0]
    assert json.loads(multi.attrs["saliency_methods"]) == list(METHODS)
    assert json.loads(multi.attrs["fills"]) == list(FILLS)


def test_the_default_layout_is_unchanged_and_one_of_each_is_the_default():
    default = AnalysisOptions()
    assert "saliency_methods" not in default.key() and "fills" not in default.key()
    assert not default.variants
    one = AnalysisOptions(saliency_methods=["abs_gradient"], fills=["uniform"])
    assert one.key() == default.key() and one.saliency_methods is None and one.fills is None
    ig = AnalysisOptions(saliency_methods=("integrated_gradients",))
    assert ig.key() == AnalysisOptions(saliency_method="integrated_gradients").key()
    model, p = TinyConv(), probe()
    plain = measure(model, p, options())
    assert not set(schema.VARIANT_DIMS) & set(plain.dims)
    xr.testing.assert_identical(
        plain, measure(model, p, options(saliency_methods=["abs_gradient"], fills=["uniform"]))
    )
    # The lists enter the cache key: another layout never answers from a cache entry.
    assert options(fills=FILLS).key() != options().key()


def test_a_fill_that_leaks_is_warned_on_its_own_slice_only():
    ds = measure(IntensityReader(), probe(), options(fills=("uniform", "zero")))
    assert ds["morf_auc"].dims == ("fill",) and "saliency_method" not in ds.dims
    assert ds["gini"].dims == ()
    assert float(ds.morf_curve.sel(fill="uniform")[-1]) > 0.9
    said = warnings_of(ds["morf_auc"])
    leak = [m for m in said if "leaks the class" in m]
    assert leak and all(m.startswith("fill 'uniform': ") for m in leak)
    assert not any("fill 'zero'" in m.split(":")[0] for m in said)
    assert any(m.startswith("fill 'uniform': ") for m in json.loads(ds.attrs["warnings"]))


def test_the_options_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match="saliency_methods must name entries of"):
        AnalysisOptions(saliency_methods=("abs_gradient", "gradcam"))
    with pytest.raises(ValueError, match="fills lists a name twice"):
        AnalysisOptions(fills=("zero", "zero"))
    with pytest.raises(TypeError, match="saliency_methods must be a list of names"):
        AnalysisOptions(saliency_methods="smoothgrad")
    with pytest.raises(ValueError, match="fill='blur' and fills="):
        AnalysisOptions(fill="blur", fills=("zero", "road"))
    # A saliency_method listed in saliency_methods is fine; the first one becomes it.
    ok = AnalysisOptions(saliency_method="smoothgrad", saliency_methods=("gradient", "smoothgrad"))
    assert ok.saliency_method == "gradient"


def test_a_runs_table_reads_one_metric_per_method_and_fill(analysed):
    multi, single = analysed
    row = run_record(multi)
    for (m, f), ds in single.items():
        assert row[schema.variant_name("morf_auc", m, f)] == float(ds.morf_auc)
        assert row[schema.variant_name("gini", m)] == float(ds.gini)
    assert "morf_auc" not in row  # no longer one number
    names = variant_names(multi, "fidelity_gap")
    assert names == [schema.variant_name("fidelity_gap", m, f) for m in METHODS for f in FILLS]
    picked = run_record(multi, [*names, "gini__smoothgrad", "morf_auc"])
    assert math.isnan(picked["gini__smoothgrad"]) and math.isnan(picked["morf_auc"])
    over = epoch_record(multi.expand_dims(epoch=[0, 1]), names)
    assert set(over.data_vars) == set(names) and over[names[0]].dims == ("epoch",)
    # Only fills vary: the run's one method names the variant.
    fills_only = multi.isel(saliency_method=0, drop=True)
    assert variant_names(fills_only, "morf_auc") == [f"morf_auc__{METHODS[0]}__{f}" for f in FILLS]


def test_the_link_over_checkpoints_takes_each_variant_as_a_metric(analysed):
    from geomxai.study import link_geometry_fidelity

    multi, _ = analysed
    multi = multi.drop_vars(["probe_saliency", "probe_features", "top_eigvecs"])
    rng = np.random.default_rng(0)
    runs = []
    for seed in (0, 1):
        run = multi.expand_dims(epoch=[0, 1, 2]).expand_dims(regime=["a"], seed=[seed])
        # Points that differ, so every pair has a correlation.
        for name in ("effective_rank", "morf_auc", "gini"):
            run[name] = run[name] + xr.DataArray(rng.random(3), dims="epoch")
        runs.append(run)
    link = link_geometry_fidelity(xr.combine_by_coords(runs), n_boot=50, min_epoch=1)
    fidelity = [str(f) for f in link["fidelity"].values]
    assert {schema.variant_name("morf_auc", m, f) for m in METHODS for f in FILLS} <= set(fidelity)
    assert "morf_auc" not in fidelity
    pair = link["spearman"].sel(geometry="effective_rank", fidelity="gini__integrated_gradients")
    assert np.isfinite(float(pair))
    # A base metric asked for by name is read as its variants.
    asked = link_geometry_fidelity(
        xr.combine_by_coords(runs),
        geometry="effective_rank",
        fidelity="gini",
        n_boot=50,
        min_epoch=1,
    )
    assert [str(f) for f in asked["fidelity"].values] == [f"gini__{m}" for m in METHODS]


@given(
    st.sampled_from(schema.fidelity_metrics()),
    st.sampled_from(SALIENCY_METHODS),
    st.sampled_from((None, "uniform", "zero", "mean", "blur", "road")),
)
def test_a_variant_name_reads_back_and_speaks_for_its_base(base, method, fill):
    name = schema.variant_name(base, method, fill)
    assert schema.split_variant(name) == (base, method, fill)
    assert schema.direction(name) == schema.direction(base)
    assert schema.label(name).startswith(schema.label(base) + " (")
    assert schema.split_variant(base) == (base, None, None)


def test_a_variant_label_says_the_method_and_fill():
    assert schema.label("morf_auc__integrated_gradients__road") == (
        "MoRF AUC (integrated gradients, ROAD)"
    )
    assert schema.label("gini__smoothgrad") == "Gini (SmoothGrad)"
    assert schema.split_variant("not_declared__x") == ("not_declared__x", None, None)
    with pytest.raises(ValueError, match="without '__'"):
        schema.variant_name("morf_auc", "a__b")
